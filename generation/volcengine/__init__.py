"""VolcEngine's visual API (Jimeng / Doubao text-to-image, async submit and poll) for Easel: the client wrapping
the official ``volcengine`` SDK (``client``) and a local stand-in server (``standin``). Plain Python, no Django."""
