"""The range of the integers Easel hands to its database: ids and counts in 64 bits.

A number beyond it reaching a query is a server error on SQLite (OverflowError) and
PostgreSQL alike, so the API's query parameters (config.api_input), the ids in paths
(config.middleware) and the schema that states both (config.api_errors) read it here.
"""

# The largest value a 64-bit signed integer column holds (BigAutoField ids, counters).
INT64_MAX = 2**63 - 1
# Ids start at 1.
ID_MIN = 1
