"""Schemathesis hooks for tests/server/schemathesis.rs.

A rule across query parameters that no JSON Schema of one parameter can
state: `until` must be later than `since` (the server answers 400
otherwise, naming `until`). Generated queries that break it have their
`until` left out, as a client that read the routes' descriptions would
send them; everything else is generated from the description alone.
"""

from datetime import datetime

import schemathesis


def _instant(value):
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


@schemathesis.hook
def map_query(context, query):
    if not isinstance(query, dict):
        return query
    since, until = _instant(query.get("since")), _instant(query.get("until"))
    if since is not None and until is not None:
        try:
            inverted = since >= until
        except TypeError:
            return query
        if inverted:
            query = dict(query)
            del query["until"]
    return query
