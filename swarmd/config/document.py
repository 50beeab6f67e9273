"""A config file -> YAML data and where each key stands, with a bound on every input.

A config comes from whoever can write the file, and `swarmd run`, `check` and a reload all read
it: none of them may hang, crash or run out of memory on it. So the file is read only when it is
a regular file of at most MAX_BYTES (a FIFO, a device, /dev/zero are refused before a byte is
read), and the YAML is measured in one pass over its events before a node is composed: nesting
deeper than MAX_DEPTH (PyYAML's composer recurses per level) and more than MAX_VALUES values,
counting every alias as the values it names (an alias bomb: 200 bytes, 2^30 values), are
refused with the line where they start, so composing and building cost at most ~0.06 s (~0.5 s
without libyaml). What the constructor itself raises on a bad scalar (a
date that does not exist, an integer of 5000 digits) becomes a YAML error too.
"""

from __future__ import annotations

import os
import stat
from typing import Any

import yaml

from swarmd.config.checker import ConfigError, Source

MAX_BYTES = 1 << 19  # a config is a few KiB; 512 KiB parse in ~0.5 s without libyaml (0.03 s with)
MAX_DEPTH = 64  # a swarmd config nests 4 deep; PyYAML composes ~3 frames per level
MAX_VALUES = 10_000  # scalars and collections, aliases expanded; a config has a few dozen
MAX_INT_DIGITS = 64  # int() of more digits is quadratic (and over 4300 refused by Python 3.11)


_TYPES = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
          (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
          (stat.S_ISSOCK, "a socket"))


def _what(mode: int) -> str:
    return next((name for test, name in _TYPES if test(mode)), "not a regular file")


def read_file(path: str) -> tuple[str, os.stat_result]:
    """The text of the config file and its stat (of the very file read, for the permission
    check); ConfigError when it is not a readable regular UTF-8 file of at most MAX_BYTES."""
    try:
        # stat before open: opening a device can be a side effect in itself (/dev/watchdog)
        if not stat.S_ISREG(os.stat(path).st_mode):
            raise ConfigError([_not_regular(path, os.stat(path).st_mode)])
        # O_NONBLOCK: if a FIFO took the file's place since, the open must not wait for a writer
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read: {exc.strerror}"]) from None
    except ValueError:  # an embedded NUL byte
        raise ConfigError([f"{path!r}: cannot read: a path cannot hold a NUL byte"]) from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ConfigError([_not_regular(path, info.st_mode)])
        if info.st_size > MAX_BYTES:
            raise ConfigError([_too_large(path, info.st_size)])
        chunks: list[bytes] = []
        size = 0
        while size <= MAX_BYTES:  # the file may grow while it is read: stop past the bound
            chunk = os.read(fd, MAX_BYTES + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > MAX_BYTES:
            raise ConfigError([_too_large(path, size, growing=True)])
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read: {exc.strerror}"]) from None
    finally:
        os.close(fd)
    data = b"".join(chunks)
    try:
        return data.decode("utf-8"), info
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise ConfigError([f"{path}: not UTF-8 text: byte {data[exc.start]:#04x} on line {line} "
                           f"cannot be decoded ({exc.reason}); save the file as UTF-8"]) from None


def _not_regular(path: str, mode: int) -> str:
    return f"{path}: cannot read: {_what(mode)}, not a regular file; give the path of a YAML file"


def _too_large(path: str, size: int, growing: bool = False) -> str:
    now = "grew past" if growing else f"is {size} bytes,"
    return (f"{path}: cannot read: the file {now} more than the {MAX_BYTES} bytes a config may "
            f"have; is it the right file?")


def make_loader(base: type[Any]) -> type[Any]:
    """yaml.safe_load's loader on `base` (libyaml's or the pure one), where a scalar the
    constructor cannot build is a YAML error at its line (never a ValueError from datetime or
    int escaping the parse)."""

    class Loader(base):  # type: ignore[misc, valid-type]
        def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
            try:
                return super().construct_object(node, deep)
            except yaml.YAMLError:
                raise
            except Exception as exc:  # noqa: BLE001 - any of them: `!!int ""` is an IndexError
                tag = str(node.tag).rsplit(":", 1)[-1]
                raise yaml.constructor.ConstructorError(
                    None, None, f"cannot read {_value(node)} as {tag}: {exc}",
                    node.start_mark) from None

        def construct_yaml_int(self, node: yaml.ScalarNode) -> int:
            if len(node.value) > MAX_INT_DIGITS:
                raise yaml.constructor.ConstructorError(
                    None, None, f"an integer of {len(node.value)} digits (at most "
                                f"{MAX_INT_DIGITS})", node.start_mark)
            return int(super().construct_yaml_int(node))

    Loader.add_constructor("tag:yaml.org,2002:int", Loader.construct_yaml_int)
    return Loader


# libyaml's parser where PyYAML was built with it (10x faster); the pure one otherwise
LOADER = make_loader(getattr(yaml, "CSafeLoader", yaml.SafeLoader))


def _value(node: yaml.Node) -> str:
    text = node.value if isinstance(node.value, str) else ""
    return repr(text if len(text) <= 40 else text[:37] + "...")


def _measure(text: str) -> None:
    """One pass over the events: refuse deep nesting and too many values before composing.

    Each collection's size counts the values it would have with every alias in it expanded
    (an alias counts the size of what it names), so a bomb is found in time linear in the
    text, whatever it would expand to."""
    stack: list[list[Any]] = []  # per open collection: [anchor, expanded size]
    sizes: dict[str, int] = {}  # anchor -> expanded size of what it names
    total = 0
    for event in yaml.parse(text, Loader=LOADER):
        if isinstance(event, yaml.CollectionStartEvent):
            if len(stack) >= MAX_DEPTH:
                raise _refused(event, f"nested deeper than {MAX_DEPTH} levels; a swarmd config "
                                      f"needs 4")
            stack.append([event.anchor, 1])
            size = 1
        elif isinstance(event, yaml.CollectionEndEvent):
            anchor, size = stack.pop()
            if anchor is not None:
                sizes[anchor] = size
            if stack:
                stack[-1][1] += size
            continue
        elif isinstance(event, yaml.ScalarEvent):
            size = 1
            if event.anchor is not None:
                sizes[event.anchor] = 1
        elif isinstance(event, yaml.AliasEvent):
            if any(anchor == event.anchor for anchor, _ in stack):
                raise _refused(event, f"the alias *{event.anchor} is inside the collection it "
                                      f"names: a structure that contains itself")
            size = sizes.get(event.anchor, 1)  # an undefined alias: the composer says so
        else:
            continue
        total += size
        if total > MAX_VALUES:
            raise _refused(event, f"more than {MAX_VALUES} values (aliases expanded); a swarmd "
                                  f"config has a few dozen")
        if stack and not isinstance(event, yaml.CollectionStartEvent):
            stack[-1][1] += size


def _refused(event: yaml.Event, problem: str) -> yaml.YAMLError:
    return yaml.MarkedYAMLError(None, None, problem, event.start_mark)


def compose(text: str) -> tuple[Any, Source]:
    """The data of the YAML text (as yaml.safe_load builds it) and its Source index.

    Raises yaml.YAMLError for text that is not YAML or breaks a bound, and
    UnicodeEncodeError for a str that is not Unicode text (lone surrogates)."""
    text.encode("utf-8")  # libyaml would fail on it deep inside; say so up front
    _measure(text)
    loader = LOADER(text)
    try:
        node = loader.get_single_node()
        source = walk(node, Source())
        data = None if node is None else loader.construct_document(node)
    finally:
        loader.dispose()
    return data, source


def walk(node: yaml.Node | None, source: Source, prefix: str = "",
         keys: Any = None) -> Source:
    """Index every key path ("timeouts.report", "health.codes.3.name") of a composed document.

    Paths use the parsed key (`0x10:` is 16, as the checks see it), not its spelling. The
    document was measured (_measure), so the walk is bounded even through aliases."""
    if isinstance(node, yaml.MappingNode):
        if keys is None:
            keys = LOADER("")  # one constructor for every key, not one per mapping
        for key_node, value_node in node.value:
            try:
                # a list or mapping as a key never gets this far: it cannot be a dict's key
                key = (keys.construct_object(key_node)
                       if isinstance(key_node, yaml.ScalarNode) else "?")
            except yaml.YAMLError:
                key = key_node.value
            path = f"{prefix}{key}"
            if "key:" + path in source.lines:
                source.duplicates.append(path)
            source.lines[path] = value_node.start_mark.line + 1
            source.lines["key:" + path] = key_node.start_mark.line + 1
            if isinstance(value_node, yaml.ScalarNode):
                source.texts[path] = value_node.value
            walk(value_node, source, path + ".", keys)
    return source
