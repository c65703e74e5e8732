"""From the manifest's sources to a stream of OBS objects, in memory that does not grow with them.

Listing files are read line by line; what is kept is decided by pure functions
(:func:`parse_listing_line`, :class:`ObjectFilter`), so most tests need no files.
An input listed twice is submitted once: a first pass (:func:`find_repeats`) finds the
paths named more than once in fixed memory, and the pass that yields objects drops their
later copies. Every pass of one run reads the same bytes: the first pass copies each listing
file into a private snapshot as it reads it, and the later passes read the snapshot, so a
listing that a cron job appends to during the run can never make a video come twice.
"""

from __future__ import annotations

import fnmatch
import mmap
import os
import re
import shutil
import stat
import tempfile
import time
import weakref
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import IO

from .errors import ManifestError
from .hashes import HashBuckets
from .manifest import Manifest, Source, not_utf8, parse_obs_url, path_problem
from .vas import CONTROL, OBS_KEY_MAX_BYTES

__all__ = [
    "VIDEO_EXTENSIONS",
    "ExpandStats",
    "LineKind",
    "ObjectFilter",
    "ObjectRef",
    "Repeats",
    "Snapshots",
    "find_repeats",
    "iter_objects",
    "parse_listing_line",
]

VIDEO_EXTENSIONS = frozenset(
    {
        *("3g2", "3gp", "asf", "avi", "dav", "divx", "f4v", "flv", "h264", "h265", "hevc"),
        *("m2t", "m2ts", "m2v", "m4v", "mkv", "mov", "mp4", "mpeg", "mpg", "mts", "mxf"),
        *("ogv", "rm", "rmvb", "ts", "vob", "webm", "wmv"),
    }
)
EXAMPLES_KEPT = 5

# What `obsutil ls -s` prints around the paths; anything else that is not a path is an error,
# because silently skipping an unknown line could silently skip a video.
# Older and newer obsutil versions: "Folder number is: 0" / "Folder number: 1", and 3.1's
# "Listing objects ." line.
_OBSUTIL_NOISE = re.compile(
    r"(Start at |Listing objects |Folder list:|Object list:|Bucket list:|Total size of |"
    r"(Folder|File|Object|Bucket) number( is)?:)"
)
_NEXT_MARKER = re.compile(r"Next marker( is)?:")
# `obsutil ls` without -s: a table whose rows are the key, then LastModified, Size, (a storage
# class in newer versions) and the ETag. Read as a key with spaces, each video in it became a
# non-video, counted and skipped; such a row is refused instead.
_LONG_ROW = re.compile(
    r"[ \t]{2,}\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z"  # LastModified
    r"[ \t]+\S+([ \t]+\S+)?[ \t]+\"?[0-9A-Fa-f-]+\"?$"  # Size, [StorageClass,] ETag
)
# What a listing line's surroundings may hold: ASCII blanks and the line break. Not str.strip()'s
# Unicode white space: a key may end in a no-break space, and U+001F is a control character.
_BLANKS = " \t\r\n"


class LineKind(Enum):
    PATH = "path"
    SKIP = "skip"
    TRUNCATED = "truncated"


@dataclass(frozen=True, slots=True)
class ObjectRef:
    """One object in OBS; ``url`` is the ``obs://bucket/key`` form used as its identity."""

    bucket: str
    key: str

    @property
    def url(self) -> str:
        return f"obs://{self.bucket}/{self.key}"


@dataclass
class ExpandStats:
    """What an expansion saw besides the objects it yielded; filled in as it streams."""

    objects: int = 0
    folders: int = 0
    duplicates: int = 0
    filtered: int = 0
    filtered_examples: list[str] = field(default_factory=list)
    truncated_listings: list[str] = field(default_factory=list)
    empty_prefixes: list[str] = field(default_factory=list)  # live prefixes that listed nothing
    unsubmittable: list[str] = field(default_factory=list)  # live keys no job can name


def parse_listing_line(line: str, *, exact: bool = False) -> tuple[LineKind, str]:
    """Classify one listing line (with or without its line break); ValueError if it makes no
    sense.

    Plain ``obs://`` paths and ``obsutil ls -s`` output are both accepted. Surrounding ASCII
    blanks are dropped; spaces inside a key are kept. ``exact`` (the spool of a live prefix,
    one key a line as OBS listed it): only the line break is dropped, so a key ending in a
    space stays that key.
    """
    text = line.removesuffix("\n") if exact else line.strip(_BLANKS)
    if not text or (not exact and text.startswith("#")):
        return LineKind.SKIP, ""
    if text.startswith("obs://"):
        if CONTROL.search(text):
            raise ValueError(f"control character in path {text!r}")
        # Two spaces first (a tab is a control character, refused above): a cheap test that
        # spares nearly every line the regex, a third of a listing line's parse.
        if not exact and "  " in text and _LONG_ROW.search(text):
            raise ValueError(
                f"a row of `obsutil ls` output without -s (columns after the key): {text[:80]!r}"
                " (save listings with `obsutil ls -s obs://bucket/prefix/ > listing.txt`)"
            )
        return LineKind.PATH, text
    marker = _NEXT_MARKER.match(text)
    if marker:
        return LineKind.TRUNCATED, text[marker.end() :].strip(_BLANKS)
    if _OBSUTIL_NOISE.match(text):
        return LineKind.SKIP, ""
    raise ValueError(
        f"not an obs:// path nor a line of `obsutil ls -s` output: {text[:80]!r}"
        " (save listings with `obsutil ls -s obs://bucket/prefix/ > listing.txt`)"
    )


class ObjectFilter:
    """Which keys count as videos: the common video extensions, or include/exclude globs.

    Globs match the whole key, case-insensitively; ``*`` also crosses ``/``. With
    ``include`` given, it replaces the extension test; ``exclude`` always applies.
    """

    def __init__(
        self, include: Iterable[str] = (), exclude: Iterable[str] = (), *, videos_only: bool = True
    ) -> None:
        self._include = _globs(include)
        self._exclude = _globs(exclude)
        self._videos_only = videos_only

    def accepts(self, key: str) -> bool:
        if self._include is not None:
            if not self._include.match(key):
                return False
        elif self._videos_only:
            _, dot, ext = key.rpartition(".")
            if not dot or ext.lower() not in VIDEO_EXTENSIONS:
                return False
        return self._exclude is None or not self._exclude.match(key)


def _globs(patterns: Iterable[str]) -> re.Pattern[str] | None:
    translated = [fnmatch.translate(p) for p in patterns]
    return re.compile("|".join(translated), re.IGNORECASE) if translated else None


# The first pass's Bloom filter: 128 Mibit (16 MiB), anonymous memory, so only the pages a
# listing touches become resident. Two bits a path: about 2 false alarms in 10,000 paths at
# 1,000,000 paths, 2 in 100 at 10,000,000.
_FILTER_BITS = 1 << 27
_QUICK_BITS_MIN = 1 << 16
_QUICK_BITS_MAX = 1 << 27


class Repeats:
    """The paths a manifest names more than once, as a sorted array of their 8-byte hashes.

    A set of every path seen would grow by ~80 bytes an entry. :func:`find_repeats` instead
    marks each path in a Bloom filter of fixed size and keeps the hash of each path the filter
    has (maybe) seen before: every true repeat, plus rare false alarms, which cost nothing but a
    lookup. The pass that yields objects then only has to track these. ``snapshots`` holds the
    bytes the first pass read, for the later passes to read again.
    """

    def __init__(self, hashes: HashBuckets, snapshots: Snapshots | None = None) -> None:
        self._sorted = hashes.sorted(unique=True)
        self.snapshots = snapshots if snapshots is not None else Snapshots(record=False)
        bits = _QUICK_BITS_MIN
        while bits < len(self._sorted) * 64 and bits < _QUICK_BITS_MAX:
            bits <<= 1
        self._mask = bits - 1
        self._quick = bytearray(bits >> 3)
        for value in self._sorted:
            at = value & self._mask
            self._quick[at >> 3] |= 1 << (at & 7)

    def __len__(self) -> int:
        return len(self._sorted)

    def tracker(self) -> Callable[[str], bool]:
        """A fresh ``first(url)`` for one pass: False for the second and later copies of a path."""
        found, quick, mask = self._sorted, self._quick, self._mask
        size = len(found)
        yielded = bytearray(size)

        def first(url: str) -> bool:
            value = hash(url)
            at = value & mask
            if not quick[at >> 3] & (1 << (at & 7)):
                return True
            index = bisect_left(found, value)
            if index == size or found[index] != value:
                return True
            if yielded[index]:
                return False
            yielded[index] = 1
            return True

        return first


def find_repeats(
    manifest: Manifest,
    stats: ExpandStats | None = None,
    each: Callable[[str], object] | None = None,
) -> Repeats:
    """The first pass over the sources: which paths come more than once. Errors are raised
    here, before anything is yielded; warnings are left to the pass that yields.

    ``stats`` and ``each`` (called with every video's URL, repeats included) let a caller
    count in the same pass: when no path repeats, that count is already exact.
    """
    mask = _FILTER_BITS - 1
    found = HashBuckets()
    snapshots = Snapshots()
    with mmap.mmap(-1, _FILTER_BITS >> 3) as seen:
        for url, _bucket, _key in _videos(manifest, stats or ExpandStats(), _ignore, snapshots):
            if each is not None:
                each(url)
            value = hash(url)
            low = value & mask
            high = (value >> 32) & mask
            low_byte, low_bit = low >> 3, 1 << (low & 7)
            high_byte, high_bit = high >> 3, 1 << (high & 7)
            if seen[low_byte] & low_bit and seen[high_byte] & high_bit:
                found.add(value)
            else:
                seen[low_byte] |= low_bit
                seen[high_byte] |= high_bit
    return Repeats(found, snapshots)


def _ignore(_message: str) -> None:
    pass


def iter_objects(
    manifest: Manifest,
    stats: ExpandStats,
    warn: Callable[[str], None],
    repeats: Repeats | None = None,
) -> Iterator[ObjectRef]:
    """Every object the manifest's sources name, once each, in manifest order.

    Without ``repeats`` (from :func:`find_repeats`, reusable across passes), it makes that
    first pass itself. Raises ManifestError (naming file and line) for unreadable or
    malformed listings, before the first object.
    """
    if repeats is None:
        repeats = find_repeats(manifest)
    first = repeats.tracker()
    for url, bucket, key in _videos(manifest, stats, warn, repeats.snapshots):
        if first(url):
            yield ObjectRef(bucket, key)
        else:
            stats.duplicates += 1


def _videos(
    manifest: Manifest,
    stats: ExpandStats,
    warn: Callable[[str], None],
    snapshots: Snapshots,
) -> Iterator[tuple[str, str, str]]:
    """(url, bucket, key) of every object that passes its source's filter, repeats included."""
    for source in manifest.sources:
        if source.prefix is not None:
            raise ManifestError(
                f"{manifest.path}: {source.where}.prefix",
                "a live OBS prefix is listed by `submit` (and --dry-run) only",
            )
        accepted = ObjectFilter(
            source.include, source.exclude, videos_only=source.listing is not None
        ).accepts
        listed = 0
        for number, url in _source_urls(source, stats, warn, snapshots):
            listed += 1
            try:
                bucket, key = parse_obs_url(url)
            except ValueError as exc:
                raise ManifestError(_where(source, manifest.path, number), str(exc)) from None
            size = len(key.encode())
            if size > OBS_KEY_MAX_BYTES:
                raise ManifestError(
                    _where(source, manifest.path, number),
                    f"the object key is {size} bytes; an OBS key is at most "
                    f"{OBS_KEY_MAX_BYTES:,} bytes (UTF-8): {url[:80]!r}...",
                )
            if not key or key.endswith("/"):
                stats.folders += 1
                continue
            stats.objects += 1
            if not accepted(key):
                stats.filtered += 1
                if len(stats.filtered_examples) < EXAMPLES_KEPT:
                    stats.filtered_examples.append(url)
                continue
            yield url, bucket, key
        if source.listed_from is not None and not listed:
            stats.empty_prefixes.append(source.listed_from)
        stats.unsubmittable.extend(source.unsubmittable)


def _where(source: Source, manifest_path: Path, number: int) -> str:
    """Where a path :func:`_source_urls` gave came from, for an error: made only then."""
    if source.listing is None:
        return f"{manifest_path}: {source.where}.paths[{number}]"
    return f"{source.listing}:{number}"


def _source_urls(
    source: Source,
    stats: ExpandStats,
    warn: Callable[[str], None],
    snapshots: Snapshots,
) -> Iterator[tuple[int, str]]:
    """(line number in the listing, or index in ``paths``; url) of each path a source names."""
    if source.listing is None:
        yield from enumerate(source.paths)
        return
    yield from _listing_urls(
        source.listing, stats, warn, snapshots, exact=source.listed_from is not None
    )


_BOM = b"\xef\xbb\xbf"


_SNAPSHOT_PREFIX = "batchsubmit-listings-"  # + pid + "-": the listings' copies (Snapshots)
_SPOOL_PREFIX = "batchsubmit-spool-"  # + pid + "-": live prefixes' keys (spool_directory)
# Versions before the pid in the name left "batchsubmit-listings-XXXXXXXX" and
# "batchsubmit-XXXXXXXX" (tempfile's names): removed once this old (no run of those versions
# is still going), and only if they look like nothing but ours: private (0700, as tempfile
# makes them) and holding only what those runs wrote. "batchsubmit-listings" or
# "batchsubmit-archives" also fits the name; an operator's folder is never taken for one.
_UNNAMED_AFTER = 8 * 24 * 3600.0
_UNNAMED = re.compile(r"batchsubmit-(?:listings-)?[a-z0-9_]{8}")
_WRITTEN = re.compile(r"\d+-.+|prefix-\d+\.txt")  # a snapshot's copies, a spool's keys


def sweep_abandoned_snapshots() -> None:
    """Remove the private directories of runs that died without removing their own (SIGKILL,
    a power cut): each is named after its process, and that process no longer exists. Another
    user's, or a live process's, are left alone; so are the unnamed ones of older versions
    until they are ``_UNNAMED_AFTER`` old."""
    try:
        entries = list(Path(tempfile.gettempdir()).glob("batchsubmit-*"))
    except OSError:
        return
    for entry in entries:
        if _abandoned(entry):
            shutil.rmtree(entry, ignore_errors=True)


def _abandoned(entry: Path) -> bool:
    name = entry.name
    for prefix in (_SNAPSHOT_PREFIX, _SPOOL_PREFIX):
        if name.startswith(prefix):
            pid, dash, _rest = name[len(prefix) :].partition("-")
            if dash and pid.isdigit():
                return _gone(int(pid))
    if not _UNNAMED.fullmatch(name):
        return False
    try:
        found = entry.lstat()
        private = stat.S_ISDIR(found.st_mode) and stat.S_IMODE(found.st_mode) == 0o700
        if not private or found.st_uid != os.getuid():
            return False
        ours = all(_WRITTEN.fullmatch(name) for name in os.listdir(entry))
    except OSError:
        return False
    return ours and time.time() - found.st_mtime > _UNNAMED_AFTER


def _gone(pid: int) -> bool:
    """Whether no process ``pid`` exists (this one, a live one or another user's: False)."""
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except (OSError, OverflowError):
        return False  # alive (another user's), or no such pid at all
    return False


def spool_directory() -> tempfile.TemporaryDirectory[str]:
    """A private directory for live prefixes' spool files, named after this process: one that
    SIGKILL leaves behind is removed by the next run (the abandoned ones swept first)."""
    sweep_abandoned_snapshots()
    return tempfile.TemporaryDirectory(prefix=f"{_SPOOL_PREFIX}{os.getpid()}-")


class Snapshots:
    """The bytes each listing file held when the first pass read it, copied as it was read
    into a private directory (removed with this object, or at exit). The later passes of the
    run read the copies; a listing that changed meanwhile is said once, its new lines left
    for the next run. ``record=False``: no copies (a caller that makes one pass only)."""

    def __init__(self, *, record: bool = True) -> None:
        self.record = record
        self._copies: dict[Path, tuple[Path, int, int]] = {}  # listing -> copy, size, mtime
        self._changed: set[Path] = set()
        self._directory: Path | None = None

    def _new_copy(self, listing: Path) -> Path:
        if self._directory is None:
            sweep_abandoned_snapshots()
            prefix = f"{_SNAPSHOT_PREFIX}{os.getpid()}-"
            self._directory = Path(tempfile.mkdtemp(prefix=prefix))
            weakref.finalize(self, shutil.rmtree, self._directory, ignore_errors=True)
        return self._directory / f"{len(self._copies)}-{listing.name}"

    def open(self, listing: Path) -> tuple[IO[bytes], IO[bytes] | None]:
        """The file to read for ``listing`` and, on the first pass, the copy to write."""
        copy = self._copies.get(listing)
        if copy is not None:
            return copy[0].open("rb"), None
        try:
            handle = listing.open("rb")
        except OSError:
            problem = path_problem(listing) or "cannot be read"
            raise ManifestError(str(listing), f"cannot read listing: {problem}") from None
        if not self.record:
            return handle, None
        try:
            return handle, self._new_copy(listing).open("wb")
        except OSError as exc:
            handle.close()
            raise ManifestError(
                str(listing), f"cannot copy the listing to a private snapshot: {exc.strerror}"
            ) from None

    def done(
        self, listing: Path, handle: IO[bytes], copy: IO[bytes] | None, start: os.stat_result
    ) -> None:
        """After a complete read: keep the copy (first pass) or check the listing is unchanged."""
        if copy is not None:
            size = copy.tell()
            copy.close()
            now = os.stat(handle.fileno())
            if not stat.S_ISREG(start.st_mode):  # a pipe (`<(obsutil ls ...)`) is read once
                self._copies[listing] = (Path(copy.name), -1, -1)  # and cannot change after
                return
            if (now.st_size, now.st_mtime_ns) != (size, start.st_mtime_ns):
                raise ManifestError(
                    str(listing),
                    "the listing changed while batchsubmit was reading it; run again once it "
                    "is complete (nothing was sent)",
                )
            self._copies[listing] = (Path(copy.name), size, start.st_mtime_ns)

    def changed(self, listing: Path) -> bool:
        """True once, if ``listing`` is no longer what the first pass read."""
        copy = self._copies.get(listing)
        if copy is None or copy[1] < 0 or listing in self._changed:
            return False
        try:
            now = listing.stat()
        except OSError:
            now = None
        if now is not None and (now.st_size, now.st_mtime_ns) == copy[1:]:
            return False
        self._changed.add(listing)
        return True


def _listing_urls(
    path: Path,
    stats: ExpandStats,
    warn: Callable[[str], None],
    snapshots: Snapshots,
    *,
    exact: bool = False,
) -> Iterator[tuple[int, str]]:
    handle, copy = snapshots.open(path)
    try:
        start = os.fstat(handle.fileno())
        number = 0
        try:
            for number, raw in enumerate(handle, 1):
                if copy is not None:
                    copy.write(raw)
                if number == 1 and raw.startswith(_BOM):
                    raw = raw[len(_BOM) :]  # Windows editors start UTF-8 files with one
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    head = raw if number == 1 else b""
                    raise ManifestError(f"{path}:{number}", not_utf8(exc, head)) from None
                try:
                    kind, value = parse_listing_line(line, exact=exact)
                except ValueError as exc:
                    raise ManifestError(f"{path}:{number}", str(exc)) from None
                if kind is LineKind.PATH:
                    yield number, value
                elif kind is LineKind.TRUNCATED:
                    stats.truncated_listings.append(str(path))
                    warn(
                        f"{path}:{number}: the listing was cut short by obsutil (next marker "
                        f"{value!r}); objects after it are missing: list again with a higher -limit"
                    )
        except OSError as exc:
            raise ManifestError(f"{path}:{number + 1}", f"read error: {exc.strerror}") from None
        snapshots.done(path, handle, copy, start)
        if snapshots.changed(path):
            warn(
                f"{path}: the listing changed after this run first read it; this run goes on "
                "with what it read then, and the next run reads the new lines"
            )
    finally:
        handle.close()
        if copy is not None:
            copy.close()
