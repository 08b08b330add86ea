// Messages of Django's admin scripts that Django's zh_Hans catalogue (djangojs) lacks:
// the labels of the two-box picker of the user and group forms (SelectFilter2.js) and
// of the date widgets. Easel's djangojs catalogue translates them; the admin's
// /admin/jsi18n/ merges it over Django's own (LOCALE_PATHS come last and win).
//
// Never loaded by any page. It exists so that `makemessages -d djangojs` finds these
// message ids in Easel's code and keeps them with --no-obsolete, like
// config/missing_translations.py does for the django domain; tests/test_i18n.py checks
// each is still missing from Django's catalogue.
gettext_noop('Choose all %s');
gettext_noop('Choose selected %s');
gettext_noop('Remove all %s');
gettext_noop('Remove selected %s');
gettext_noop('Choose %s by selecting them and then select the "Choose" arrow button.');
gettext_noop('Remove %s by selecting them and then select the "Remove" arrow button.');
gettext_noop('(click to clear)');
