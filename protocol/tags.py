"""The tag-catalog operations and the deletes, declared.

``tag_create``, ``tag_get``, ``tag_list``, ``tag_update``, ``tag_rename`` and
``tag_remove`` answer with tag maps (``{"id", "name", "unit", "description",
"value_type", "duplicates", "retention_us", "created_us"}``, keys may grow);
``delete`` and ``delete_tag`` with the LSN of the delete. A tag is referred to
by its id or its name everywhere.

The values of metadata fields (which value types and duplicate policies
exist) are checked by the server's catalog; here only their wire types are.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .declare import Message, Op, Role, message
from .errors import InvalidInput, NotFound, XtsdbError
from .messages import UINT32_MAX, int_field
from .ops import STORAGE_ERRORS, TagRef
from .wire import Bool, Int, Kind, Lengths, Str, Tag, arg

TAG_FIELDS = ("unit", "description", "value_type", "duplicates", "retention_us")
"""Metadata a tag may be created or updated with."""
MAX_TAG_LIST = 65_536
"""Most tags one ``tag_list`` returns: a msgpack array's decoder limit."""
DEFAULT_TAG_LIST = 10_000


class TagMap(Kind):
    type_doc = "map"

    def encode(self, value: Any, name: str, lengths: Lengths) -> dict[str, Any]:
        return dict(value)

    def decode(self, raw: Any, name: str, lengths: Lengths) -> dict[str, Any]:
        if not isinstance(raw, dict):
            raise InvalidInput("a tag must be a map")
        int_field(raw.get("id"), "id", 0, UINT32_MAX)
        if not isinstance(raw.get("name"), str):
            raise InvalidInput("a tag map needs a str 'name'")
        return raw


class TagMaps(Kind):
    type_doc = "array of map"

    def encode(self, value: Any, name: str, lengths: Lengths) -> list[dict[str, Any]]:
        return [dict(i) for i in value]

    def decode(self, value: Any, name: str, lengths: Lengths) -> list[dict[str, Any]]:
        if not isinstance(value, list):
            raise InvalidInput(f"{name!r} must be an array of maps")
        return [TagMap().decode(t, name, lengths) for t in value]


_NAME = "1..256 characters, no control characters; unique"
_META_DOCS = {
    "unit": ("str", "up to 4,096 characters"),
    "description": ("str", "up to 4,096 characters"),
    "value_type": ("str", "`float64` (default), `int64`, `bool` or `enum`: metadata for clients"),
    "duplicates": (
        "str",
        "`last` (default), `first` or `reject`: which of two writes of one timestamp is kept",
    ),
    "retention_us": ("int >= 0", "this tag's own retention (0, default: the database's)"),
}


class TagMetadata(Kind):
    """The optional metadata fields, one wire key each, as one ``{field: value}`` map.

    On the client, a key that is not a metadata field is refused; the server ignores
    keys it does not know, as it does in every request."""

    one_key = False

    def put(self, out: dict[str, Any], name: str, value: Any, lengths: Lengths) -> None:
        unknown = sorted(set(value) - set(TAG_FIELDS))
        if unknown:
            raise InvalidInput(f"unknown tag fields {unknown}; known: {list(TAG_FIELDS)}")
        out.update(self._checked(value))

    def take(self, msg: Mapping[str, Any], name: str, lengths: Lengths, default: Any) -> Any:
        return self._checked(msg)

    @staticmethod
    def _checked(fields: Mapping[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key in TAG_FIELDS:
            value = fields.get(key)
            if value is None:
                continue
            if key == "retention_us":
                out[key] = int_field(value, key, 0)
            elif not isinstance(value, str):
                raise InvalidInput(f"{key!r} must be a str, got {type(value).__name__}")
            else:
                out[key] = value
        return out

    def doc_rows(self, name: str, doc: str, optional: bool) -> list[tuple[str, str, str]]:
        return [(k, f"{t}, optional", d) for k, (t, d) in _META_DOCS.items()]


@message
class TagCreate(Message):
    name: str = arg(Str(nonempty=True), _NAME)
    meta: dict[str, Any] = arg(TagMetadata(), "", default={})


@message
class TagRefOnly(Message):
    tag: TagRef = arg(Tag(), "tag id or name")


@message
class TagUpdate(Message):
    tag: TagRef = arg(Tag(), "tag id or name")
    meta: dict[str, Any] = arg(TagMetadata(), "", default={})


@message
class TagRename(Message):
    tag: TagRef = arg(Tag(), "tag id or name")
    name: str = arg(Str(nonempty=True), "the new name (as for `tag_create`)")


@message
class TagList(Message):
    pattern: str = arg(
        Str(), "glob on names: `*`, `?`, `[...]` (default, or empty: `*`, all)", default="*"
    )
    limit: int = arg(
        Int(1, MAX_TAG_LIST), "at most this many (default 10,000)", default=DEFAULT_TAG_LIST
    )


@message
class TagAnswer(Message):
    tag: dict[str, Any] = arg(
        TagMap(),
        "the tag: `id`, `name`, `unit`, `description`, "
        "`value_type`, `duplicates`, `retention_us`, `created_us` (keys may "
        "grow)",
    )


@message
class TagListAnswer(Message):
    tags: list[dict[str, Any]] = arg(TagMaps(), "tag maps (as for `tag_create`), sorted by name")


_CATALOG_ERRORS: tuple[type[XtsdbError], ...] = (InvalidInput, *STORAGE_ERRORS)
TAG_CREATE = Op(
    "tag_create",
    TagCreate,
    TagAnswer,
    Role.WRITE,
    False,
    _CATALOG_ERRORS,
    "Adds a tag to the catalog under a new name; the server picks its id.",
)
TAG_GET = Op(
    "tag_get", TagRefOnly, TagAnswer, Role.READ, True, (NotFound,), "One tag's catalog entry."
)
TAG_LIST = Op(
    "tag_list",
    TagList,
    TagListAnswer,
    Role.READ,
    True,
    (),
    "The tags whose names match a glob, sorted by name.",
)
TAG_UPDATE = Op(
    "tag_update",
    TagUpdate,
    TagAnswer,
    Role.WRITE,
    False,
    (NotFound, *_CATALOG_ERRORS),
    "Changes some of a tag's metadata.",
)
TAG_RENAME = Op(
    "tag_rename",
    TagRename,
    TagAnswer,
    Role.WRITE,
    False,
    (NotFound, *_CATALOG_ERRORS),
    "Renames a tag; it keeps its id and its data.",
)
TAG_REMOVE = Op(
    "tag_remove",
    TagRefOnly,
    TagAnswer,
    Role.WRITE,
    False,
    (NotFound, *STORAGE_ERRORS),
    "Deletes a tag's points (as `delete_tag`), then its catalog entry.",
)


MAX_TAG_SEARCH = 1000


@message
class TagSearch(Message):
    text: str = arg(
        Str(), "case-insensitive part of a name or description; empty: every tag", default=""
    )
    after: str | None = arg(
        Str(), "a page's last name: the next page starts after it", default=None
    )
    limit: int = arg(Int(1, MAX_TAG_SEARCH), "at most this many (default 100)", default=100)


@message
class TagPage(Message):
    tags: list[dict[str, Any]] = arg(TagMaps(), "tag maps (as for `tag_create`), sorted by name")
    more: bool = arg(Bool(), "more tags match after the last one", default=False, always=True)


TAG_SEARCH = Op(
    "tag_search",
    TagSearch,
    TagPage,
    Role.READ,
    True,
    (),
    "A page of the tags whose name or description holds some text, by name.",
)


# -- deletes ------------------------------------------------------------------------


@message
class Delete(Message):
    tag: TagRef = arg(Tag(), "tag id or name")
    start: int = arg(Int(), "first timestamp deleted (µs)")
    end: int = arg(Int(), "first timestamp kept (µs); `end <= start` is `invalid_input`")


@message
class Deleted(Message):
    lsn: int = arg(Int(0), "log sequence number of the delete")


DELETE = Op(
    "delete",
    Delete,
    Deleted,
    Role.WRITE,
    False,
    (NotFound, InvalidInput, *STORAGE_ERRORS),
    "Deletes the points of one tag in `[start, end)`; durable when answered.",
)
DELETE_TAG = Op(
    "delete_tag",
    TagRefOnly,
    Deleted,
    Role.WRITE,
    False,
    (NotFound, *STORAGE_ERRORS),
    "Deletes every point of one tag; its catalog entry stays (see `tag_remove`).",
)

CATALOG_OPS = (
    TAG_CREATE,
    TAG_GET,
    TAG_LIST,
    TAG_SEARCH,
    TAG_UPDATE,
    TAG_RENAME,
    TAG_REMOVE,
    DELETE,
    DELETE_TAG,
)
