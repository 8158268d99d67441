"""Builders and parsers of the tag-catalog ops and the deletes.

``tag_create``, ``tag_get``, ``tag_list``, ``tag_update``, ``tag_rename`` and
``tag_remove`` answer with tag maps (``{"id", "name", "unit", "description",
"value_type", "duplicates", "retention_us", "created_us"}``, keys may grow);
``delete`` and ``delete_tag`` with the LSN of the delete. A tag is referred to
by its id or its name everywhere (:func:`~.messages.tag_field`).

The values of metadata fields (which value types and duplicate policies
exist) are checked by the server's catalog; here only their wire types are.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .errors import InvalidInput
from .messages import (
    INT64_MAX,
    int_field,
    ok_response,
    optional_int_field,
    request,
    required,
    str_field,
    tag_field,
)
from .ops import checked_response

TAG_FIELDS = ("unit", "description", "value_type", "duplicates", "retention_us")
"""Metadata a tag may be created or updated with."""
MAX_TAG_LIST = 65_536
"""Most tags one ``tag_list`` returns: a msgpack array's decoder limit."""
DEFAULT_TAG_LIST = 10_000

TagRef = int | str


def _meta(fields: Mapping[str, Any], *, strict: bool) -> dict[str, Any]:
    """The metadata among ``fields``, wire types checked; ``strict``: no other keys allowed."""
    if strict:
        unknown = sorted(set(fields) - set(TAG_FIELDS))
        if unknown:
            raise InvalidInput(f"unknown tag fields {unknown}; known: {list(TAG_FIELDS)}")
    out: dict[str, Any] = {}
    for key in TAG_FIELDS:
        if fields.get(key) is None:
            continue
        if key == "retention_us":
            out[key] = int_field(fields[key], key, 0)
        else:
            out[key] = str_field(fields, key)
    return out


def _tag_request(op: str, req_id: int, tag: TagRef, **fields: Any) -> dict[str, Any]:
    return request(op, req_id, tag=tag_field(tag), **fields)


def parse_tag_ref(msg: Mapping[str, Any]) -> TagRef:
    """The ``tag`` of tag_get, tag_remove and delete_tag."""
    return tag_field(required(msg, "tag"))


# -- catalog ----------------------------------------------------------------------


def tag_create_request(req_id: int, name: str, **meta: Any) -> dict[str, Any]:
    """Name a new tag; ``meta`` from :data:`TAG_FIELDS`. The server picks its id."""
    return request("tag_create", req_id, name=_name(name, "name"), **_meta(meta, strict=True))


def parse_tag_create(msg: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """``(name, metadata)`` of a tag_create request (unknown fields are ignored)."""
    return _name(required(msg, "name"), "name"), _meta(msg, strict=False)


def tag_get_request(req_id: int, tag: TagRef) -> dict[str, Any]:
    return _tag_request("tag_get", req_id, tag)


def tag_list_request(
    req_id: int, pattern: str | None = None, limit: int | None = None
) -> dict[str, Any]:
    """Tags whose name matches the glob ``pattern`` (``*``, ``?``, ``[...]``), by name."""
    fields: dict[str, Any] = {}
    if pattern is not None:
        fields["pattern"] = _name(pattern, "pattern")
    if limit is not None:
        fields["limit"] = int_field(limit, "limit", 1, MAX_TAG_LIST)
    return request("tag_list", req_id, **fields)


def parse_tag_list(msg: Mapping[str, Any]) -> tuple[str, int]:
    """``(pattern, limit)`` of a tag_list request: ``*`` and 10,000 when absent."""
    pattern = str_field(msg, "pattern")
    limit = optional_int_field(msg, "limit", 1, MAX_TAG_LIST)
    return pattern or "*", DEFAULT_TAG_LIST if limit is None else limit


def tag_update_request(req_id: int, tag: TagRef, **meta: Any) -> dict[str, Any]:
    """Change some of a tag's metadata; fields not given keep their values."""
    return _tag_request("tag_update", req_id, tag, **_meta(meta, strict=True))


def parse_tag_update(msg: Mapping[str, Any]) -> tuple[TagRef, dict[str, Any]]:
    return parse_tag_ref(msg), _meta(msg, strict=False)


def tag_rename_request(req_id: int, tag: TagRef, name: str) -> dict[str, Any]:
    return _tag_request("tag_rename", req_id, tag, name=_name(name, "name"))


def parse_tag_rename(msg: Mapping[str, Any]) -> tuple[TagRef, str]:
    return parse_tag_ref(msg), _name(required(msg, "name"), "name")


def tag_remove_request(req_id: int, tag: TagRef) -> dict[str, Any]:
    """Delete a tag's points and its catalog entry."""
    return _tag_request("tag_remove", req_id, tag)


def tag_response(req_id: int, info: Mapping[str, Any]) -> dict[str, Any]:
    return ok_response(req_id, tag=dict(info))


def tag_list_response(req_id: int, infos: list[Mapping[str, Any]]) -> dict[str, Any]:
    return ok_response(req_id, tags=[dict(i) for i in infos])


def _check_info(info: Any) -> dict[str, Any]:
    if not isinstance(info, dict):
        raise InvalidInput("a tag must be a map")
    int_field(info.get("id"), "id", 0, (1 << 32) - 1)
    if not isinstance(info.get("name"), str):
        raise InvalidInput("a tag map needs a str 'name'")
    return info


def parse_tag_response(resp: Mapping[str, Any]) -> dict[str, Any]:
    """The ``tag`` map of a tag_create/get/update/rename/remove response."""
    return checked_response(resp, "tag", lambda: _check_info(resp.get("tag")))


def parse_tag_list_response(resp: Mapping[str, Any]) -> list[dict[str, Any]]:
    def parse() -> list[dict[str, Any]]:
        tags = resp.get("tags")
        if not isinstance(tags, list):
            raise InvalidInput("'tags' must be an array of maps")
        return [_check_info(t) for t in tags]

    return checked_response(resp, "tag_list", parse)


def _name(value: Any, field: str) -> str:
    if not isinstance(value, str) or not value:
        raise InvalidInput(f"{field!r} must be a non-empty str")
    return value


# -- deletes ------------------------------------------------------------------------


def delete_request(req_id: int, tag: TagRef, start: int, end: int) -> dict[str, Any]:
    """Delete the points of ``tag`` with ``start <= ts < end``."""
    return _tag_request(
        "delete", req_id, tag, start=int_field(start, "start"), end=int_field(end, "end")
    )


def parse_delete(msg: Mapping[str, Any]) -> tuple[TagRef, int, int]:
    return (
        parse_tag_ref(msg),
        int_field(required(msg, "start"), "start"),
        int_field(required(msg, "end"), "end"),
    )


def delete_tag_request(req_id: int, tag: TagRef) -> dict[str, Any]:
    """Delete every point of ``tag`` (its catalog entry stays; see tag_remove)."""
    return _tag_request("delete_tag", req_id, tag)


def parse_lsn_response(resp: Mapping[str, Any]) -> int:
    """The ``lsn`` of a delete or delete_tag response."""
    return checked_response(resp, "delete", lambda: int_field(resp.get("lsn"), "lsn", 0, INT64_MAX))
