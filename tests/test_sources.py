"""Listing lines and source expansion: what is a video, what is skipped, what is an error."""

from __future__ import annotations

import dataclasses
import gc
import os
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from batchsubmit import sources
from batchsubmit.errors import ManifestError
from batchsubmit.hashes import HashBuckets
from batchsubmit.manifest import JobTemplate, Manifest, Service, Source
from batchsubmit.sources import (
    VIDEO_EXTENSIONS,
    ExpandStats,
    LineKind,
    ObjectFilter,
    ObjectRef,
    Repeats,
    find_repeats,
    iter_objects,
    parse_listing_line,
)

# The `obsutil ls -s` sample from VAS-API.md, as a user would save it.
OBSUTIL_SAMPLE = """\
Start at 2026-11-27 02:00:01.123 +0800 CST
Folder list:
obs://bucket/prefix/sub/

Object list:
obs://bucket/prefix/a.mp4
obs://bucket/prefix/sub/b.mov

Total size of prefix [prefix/] is: 1.2GB
Folder number is: 1
File number is: 2
"""


# -- parse_listing_line -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "kind", "value"),
    [
        ("obs://bucket/a.mp4", LineKind.PATH, "obs://bucket/a.mp4"),
        ("obs://bucket/a.mp4\n", LineKind.PATH, "obs://bucket/a.mp4"),
        ("obs://bucket/a.mp4\r\n", LineKind.PATH, "obs://bucket/a.mp4"),
        ("   obs://bucket/a.mp4   ", LineKind.PATH, "obs://bucket/a.mp4"),
        (
            "obs://bucket/dir with  spaces/a b.mp4",
            LineKind.PATH,
            "obs://bucket/dir with  spaces/a b.mp4",
        ),
        ("obs://bucket/视频/文件 (1).mp4", LineKind.PATH, "obs://bucket/视频/文件 (1).mp4"),
        ("obs://bucket/folder/", LineKind.PATH, "obs://bucket/folder/"),
        ("", LineKind.SKIP, ""),
        ("\n", LineKind.SKIP, ""),
        ("   \t  ", LineKind.SKIP, ""),
        ("# a comment", LineKind.SKIP, ""),
        ("   # indented comment obs://x/y.mp4", LineKind.SKIP, ""),
        ("Start at 2026-11-27 02:00:01.123 +0800 CST", LineKind.SKIP, ""),
        ("Folder list:", LineKind.SKIP, ""),
        ("Object list:", LineKind.SKIP, ""),
        ("Bucket list:", LineKind.SKIP, ""),
        ("Total size of prefix [prefix/] is: 1.2GB", LineKind.SKIP, ""),
        ("Folder number is: 1", LineKind.SKIP, ""),
        ("File number is: 2", LineKind.SKIP, ""),
        ("Object number is: 2", LineKind.SKIP, ""),
        ("Bucket number is: 2", LineKind.SKIP, ""),
        ("Next marker is: prefix/zz.mp4", LineKind.TRUNCATED, "prefix/zz.mp4"),
        ("Next marker is:   prefix/z z.mp4  ", LineKind.TRUNCATED, "prefix/z z.mp4"),
        # newer obsutil (2024) and 3.1's own lines
        ("Listing objects .", LineKind.SKIP, ""),
        ("Folder number: 1", LineKind.SKIP, ""),
        ("File number: 1", LineKind.SKIP, ""),
        ("Total size of prefix [x]: 470.11MB", LineKind.SKIP, ""),
        ("Next marker: prefix/zz.mp4", LineKind.TRUNCATED, "prefix/zz.mp4"),
        # only ASCII blanks surround a path: a no-break space or U+3000 ending a key is the key's
        ("obs://bucket/y.mp4\u00a0", LineKind.PATH, "obs://bucket/y.mp4\u00a0"),
        ("obs://bucket/y.mp4\u3000\n", LineKind.PATH, "obs://bucket/y.mp4\u3000"),
    ],
)
def test_parse_listing_line(line: str, kind: LineKind, value: str) -> None:
    """Paths, comments, blanks and obsutil's own lines are told apart; keys keep inner spaces."""
    assert parse_listing_line(line) == (kind, value)


@pytest.mark.parametrize(
    "line",
    [
        "bucket/a.mp4",
        "a.mp4",
        "s3://bucket/a.mp4",
        "https://bucket.obs.cn-north-4.myhuaweicloud.com/a.mp4",
        "Error: access denied",
        "Total",
        "obs://bucket/a\x00b.mp4",
        "obs://bucket/a\tb.mp4",
        "obs://bucket/a\rb.mp4",
        "obs://bucket/a\x1bb.mp4",
        "obs://bucket/a\x7fb.mp4",
        "\x00",
        "obs://bucket/z.mp4\x1f",  # str.strip() took it for white space and dropped it
        "obs://bucket/z.mp4\x85",
    ],
)
def test_parse_listing_line_rejects(line: str) -> None:
    """A line neither a path nor obsutil output, or a path with control characters, raises."""
    with pytest.raises(ValueError, match=r"control character|obsutil"):
        parse_listing_line(line)


def test_a_listing_saved_without_s_is_refused_at_its_first_row(tmp_path: Path) -> None:
    """`obsutil ls` without -s prints a table: the key, then LastModified, Size, a storage
    class and the ETag. Read as one key with spaces, every video became a "non-video",
    counted and skipped; a row of it is refused, naming the line, even with its header cut."""
    rows = [
        "obs://bucket/prefix/a.mp4                 2018-11-16T02:15:49Z          33243     "
        'standard            "796393c1eaf502ef56a85c2ceb640aea"',
        'obs://bucket/prefix/b.mp4   2018-11-16T02:15:49.120Z   1.2MB   "79639-3"  ',
    ]
    for row in rows:
        path = listing(tmp_path, f"Object list:\n\n{row}\n")
        with pytest.raises(ManifestError, match=r"listing\.txt:3: .*without -s"):
            expand(make_manifest(tmp_path, path))
    # a key that only holds a date and spaces is still a key
    key = "obs://bucket/cam  2018-11-16T02:15:49Z  take 2.mp4"
    assert parse_listing_line(key) == (LineKind.PATH, key)


def test_a_live_spool_line_is_its_key_exactly() -> None:
    """A live prefix's spool holds OBS's keys one a line: a key ending in spaces is that key
    (stripped, `cam/x.mp4 ` became `cam/x.mp4`: a real object taken for a repeat of another,
    so silently skipped)."""
    assert parse_listing_line("obs://b/cam/x.mp4 \n", exact=True) == (
        LineKind.PATH,
        "obs://b/cam/x.mp4 ",
    )
    assert parse_listing_line("obs://b/#odd.mp4\n", exact=True) == (
        LineKind.PATH,
        "obs://b/#odd.mp4",
    )
    assert parse_listing_line("obs://b/cam/x.mp4 \n") == (LineKind.PATH, "obs://b/cam/x.mp4")


def test_obsutil_sample_parses() -> None:
    """Every line of VAS-API.md's obsutil sample parses: one folder and two objects."""
    kinds = [parse_listing_line(line) for line in OBSUTIL_SAMPLE.splitlines()]
    paths = [value for kind, value in kinds if kind is LineKind.PATH]
    assert paths == [
        "obs://bucket/prefix/sub/",
        "obs://bucket/prefix/a.mp4",
        "obs://bucket/prefix/sub/b.mov",
    ]
    assert all(kind is not LineKind.TRUNCATED for kind, _ in kinds)


# -- ObjectFilter -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "accepted"),
    [
        ("a.mp4", True),
        ("A.MP4", True),
        ("dir/b.Mov", True),
        ("c.mkv", True),
        ("d.ts", True),
        ("e.webm", True),
        ("f.txt", False),
        ("noextension", False),
        ("g.mp4.txt", False),
        ("h.txt.mp4", True),
        ("mp4", False),
        ("dir.mp4/readme", False),
        (".mp4", True),
    ],
)
def test_video_extension_filter(key: str, accepted: bool) -> None:
    """Without include globs, only common video extensions pass, whatever their case."""
    assert ObjectFilter().accepts(key) is accepted


def test_video_extensions_cover_the_common_ones() -> None:
    """The usual container formats are all known videos (lower-case, no dot)."""
    assert {"mp4", "mov", "mkv", "avi", "flv", "ts", "webm", "m4v", "wmv"} <= VIDEO_EXTENSIONS
    assert all(ext == ext.lower() and "." not in ext for ext in VIDEO_EXTENSIONS)


@pytest.mark.parametrize(
    ("include", "exclude", "key", "accepted"),
    [
        (["*.txt"], [], "notes.txt", True),
        (["*.txt"], [], "video.mp4", False),
        (["videos/*"], [], "videos/deep/down/x.bin", True),
        (["videos/*"], [], "other/x.mp4", False),
        (["*.MP4"], [], "clip.mp4", True),
        (["cam?/*.mp4"], [], "cam1/a.mp4", True),
        (["cam?/*.mp4"], [], "cam12/a.mp4", False),
        ([], ["*/raw/*"], "a/raw/b.mp4", False),
        ([], ["*/raw/*"], "a/cooked/b.mp4", True),
        ([], ["*.MOV"], "x.mov", False),
        (["*.mp4", "*.bin"], ["*tmp*"], "a.bin", True),
        (["*.mp4", "*.bin"], ["*tmp*"], "tmp/a.mp4", False),
        ([], ["*"], "a.mp4", False),
    ],
)
def test_globs(include: list[str], exclude: list[str], key: str, accepted: bool) -> None:
    """include replaces the extension test, exclude always applies; '*' crosses '/', any case."""
    assert ObjectFilter(include, exclude).accepts(key) is accepted


def test_filter_without_video_test() -> None:
    """videos_only=False (explicit paths) accepts any key unless excluded."""
    assert ObjectFilter(videos_only=False).accepts("notes.txt")
    assert not ObjectFilter(exclude=["*.txt"], videos_only=False).accepts("notes.txt")


# -- iter_objects -------------------------------------------------------------------------------


def make_manifest(tmp_path: Path, *sources: Source) -> Manifest:
    return Manifest(
        path=tmp_path / "m.toml",
        service=Service(
            name="c-video-analysis",
            version="1.0",
            endpoint="https://iva.cn-north-4.myhuaweicloud.com",
            project_id=None,
        ),
        job=JobTemplate(
            output_bucket="out-bucket",
            output_path="results/",
            name="{stem}-{hash}",
            description=None,
            body={},
        ),
        sources=sources,
    )


def listing(
    tmp_path: Path,
    content: str | bytes,
    name: str = "listing.txt",
    include: tuple[str, ...] = (),
    exclude: tuple[str, ...] = (),
) -> Source:
    path = tmp_path / name
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return Source(where="source[0]", listing=path, paths=(), include=include, exclude=exclude)


def explicit(*paths: str, exclude: tuple[str, ...] = ()) -> Source:
    return Source(where="source[1]", listing=None, paths=paths, include=(), exclude=exclude)


class Warnings:
    def __init__(self) -> None:
        self.messages: list[str] = []

    def __call__(self, message: str) -> None:
        self.messages.append(message)


def expand(manifest: Manifest) -> tuple[list[str], ExpandStats, list[str]]:
    stats = ExpandStats()
    warn = Warnings()
    urls = [ref.url for ref in iter_objects(manifest, stats, warn)]
    return urls, stats, warn.messages


def test_obsutil_listing_file(tmp_path: Path) -> None:
    """An obsutil ls -s file yields its videos; its folder is counted, not submitted."""
    urls, stats, warnings = expand(make_manifest(tmp_path, listing(tmp_path, OBSUTIL_SAMPLE)))
    assert urls == ["obs://bucket/prefix/a.mp4", "obs://bucket/prefix/sub/b.mov"]
    assert stats.folders == 1
    assert stats.objects == 2
    assert stats.filtered == 0
    assert stats.duplicates == 0
    assert warnings == []


def test_video_filter_in_listing(tmp_path: Path) -> None:
    """In listings, the extension test is case-insensitive; other files are counted as filtered."""
    content = "\n".join(
        f"obs://bkt/{key}"
        for key in ["a.MP4", "b.txt", "c.mov", "d.TXT", "e.jpg", "f", "g.srt", "h.json", "i.Mkv"]
    )
    urls, stats, _ = expand(make_manifest(tmp_path, listing(tmp_path, content)))
    assert urls == ["obs://bkt/a.MP4", "obs://bkt/c.mov", "obs://bkt/i.Mkv"]
    assert stats.filtered == 6
    assert stats.objects == 9
    assert stats.filtered_examples == [
        "obs://bkt/b.txt",
        "obs://bkt/d.TXT",
        "obs://bkt/e.jpg",
        "obs://bkt/f",
        "obs://bkt/g.srt",
    ]


def test_include_and_exclude_in_listing(tmp_path: Path) -> None:
    """A source's include/exclude globs decide what a listing yields."""
    content = "obs://bkt/cam1/a.mp4\nobs://bkt/cam1/raw/b.mp4\nobs://bkt/cam2/c.mp4\n"
    source = listing(tmp_path, content, include=("cam1/*",), exclude=("*/raw/*",))
    urls, stats, _ = expand(make_manifest(tmp_path, source))
    assert urls == ["obs://bkt/cam1/a.mp4"]
    assert stats.filtered == 2


ODD_KEYS = [
    "dir with spaces/a b.mp4",
    "视频/监控 录像 01.mp4",
    "emoji/🎬 clip.mov",
    "punct/a,b;c=d&e+f%20g#h?i!j'k(l)m[n]o{p}~q.mp4",
    "quotes/\"double\" and 'single'.mp4",
    " leading space.mp4",
    "multi//slash.mp4",
    "back\\slash.mp4",
    "café/Ünïcödé.MP4",
]


def test_odd_keys_are_kept_exactly(tmp_path: Path) -> None:
    """Keys with spaces, unicode and punctuation reach the ObjectRef byte for byte."""
    content = "".join(f"obs://bkt/{key}\r\n" for key in ODD_KEYS)
    manifest = make_manifest(tmp_path, listing(tmp_path, content))
    refs = list(iter_objects(manifest, ExpandStats(), Warnings()))
    assert [ref.key for ref in refs] == ODD_KEYS
    assert all(ref.bucket == "bkt" for ref in refs)


def test_duplicates_within_a_listing(tmp_path: Path) -> None:
    """A path listed twice in one listing is submitted once and counted as a duplicate."""
    content = "obs://bkt/a.mp4\nobs://bkt/b.mp4\nobs://bkt/a.mp4\n  obs://bkt/a.mp4  \n"
    urls, stats, _ = expand(make_manifest(tmp_path, listing(tmp_path, content)))
    assert urls == ["obs://bkt/a.mp4", "obs://bkt/b.mp4"]
    assert stats.duplicates == 2


def test_duplicates_across_sources(tmp_path: Path) -> None:
    """A path named by a listing and by explicit paths is submitted once, the first time."""
    first = listing(tmp_path, "obs://bkt/a.mp4\nobs://bkt/b.mp4\n")
    second = listing(tmp_path, "obs://bkt/b.mp4\nobs://bkt/c.mp4\n", name="other.txt")
    third = explicit("obs://bkt/c.mp4", "obs://bkt/a.mp4", "obs://bkt/d.mp4")
    urls, stats, _ = expand(make_manifest(tmp_path, first, second, third))
    assert urls == ["obs://bkt/a.mp4", "obs://bkt/b.mp4", "obs://bkt/c.mp4", "obs://bkt/d.mp4"]
    assert stats.duplicates == 3


def test_same_key_in_other_bucket_is_not_a_duplicate(tmp_path: Path) -> None:
    """Identity is the whole obs:// path: the same key in two buckets is two videos."""
    urls, stats, _ = expand(
        make_manifest(tmp_path, explicit("obs://bkt-a/a.mp4", "obs://bkt-b/a.mp4"))
    )
    assert urls == ["obs://bkt-a/a.mp4", "obs://bkt-b/a.mp4"]
    assert stats.duplicates == 0


def test_keys_differing_only_in_case_are_distinct(tmp_path: Path) -> None:
    """OBS keys are case-sensitive: a.mp4 and A.mp4 are both submitted."""
    urls, _, _ = expand(
        make_manifest(tmp_path, listing(tmp_path, "obs://bkt/a.mp4\nobs://bkt/A.mp4\n"))
    )
    assert urls == ["obs://bkt/a.mp4", "obs://bkt/A.mp4"]


def test_explicit_paths_bypass_the_extension_filter(tmp_path: Path) -> None:
    """A path named explicitly in the manifest is submitted whatever its extension."""
    urls, stats, _ = expand(
        make_manifest(tmp_path, explicit("obs://bkt/stream.bin", "obs://bkt/clip"))
    )
    assert urls == ["obs://bkt/stream.bin", "obs://bkt/clip"]
    assert stats.filtered == 0


def test_explicit_paths_still_obey_exclude(tmp_path: Path) -> None:
    """exclude applies to explicit paths too."""
    urls, stats, _ = expand(
        make_manifest(tmp_path, explicit("obs://bkt/a.bin", "obs://bkt/b.tmp", exclude=("*.tmp",)))
    )
    assert urls == ["obs://bkt/a.bin"]
    assert stats.filtered == 1


def test_comments_blank_lines_and_crlf(tmp_path: Path) -> None:
    """Comments and blank lines are skipped; CRLF files read like LF files."""
    content = (
        "# my videos\r\n\r\nobs://bkt/a.mp4\r\n   \r\n# obs://bkt/commented.mp4\r\nobs://bkt/b.mp4"
    )
    urls, stats, _ = expand(make_manifest(tmp_path, listing(tmp_path, content)))
    assert urls == ["obs://bkt/a.mp4", "obs://bkt/b.mp4"]
    assert stats.objects == 2


def test_empty_listing(tmp_path: Path) -> None:
    """An empty listing yields nothing and does not fail."""
    urls, stats, warnings = expand(make_manifest(tmp_path, listing(tmp_path, b"")))
    assert urls == []
    assert stats == ExpandStats()
    assert warnings == []


def test_truncated_listing_warns(tmp_path: Path) -> None:
    """'Next marker is:' warns (file:line, the marker), is recorded, and keeps what came before."""
    content = "Object list:\nobs://bkt/a.mp4\nobs://bkt/b.mp4\nNext marker is: zz/c.mp4\n"
    source = listing(tmp_path, content)
    urls, stats, warnings = expand(make_manifest(tmp_path, source))
    assert urls == ["obs://bkt/a.mp4", "obs://bkt/b.mp4"]
    assert stats.truncated_listings == [str(source.listing)]
    assert len(warnings) == 1
    assert warnings[0].startswith(f"{source.listing}:4: ")
    assert "'zz/c.mp4'" in warnings[0]
    assert "-limit" in warnings[0]


def test_untruncated_listing_does_not_warn(tmp_path: Path) -> None:
    """A complete listing calls the warning callback never."""
    _, stats, warnings = expand(make_manifest(tmp_path, listing(tmp_path, OBSUTIL_SAMPLE)))
    assert warnings == []
    assert stats.truncated_listings == []


@pytest.mark.parametrize(
    ("content", "line", "fragment"),
    [
        (b"obs://bkt/a.mp4\nobs://bkt/caf\xe9.mp4\n", 2, "not UTF-8"),
        (b"obs://bkt/a.mp4\n\nthis is not a path\n", 3, "obsutil"),
        (b"obs://bkt/a.mp4\nobs://bkt/a\x00.mp4\n", 2, "control character"),
        ("obs://bkt/a.mp4\nobs://bkt/a\x85b.mp4\n".encode(), 2, "control character"),  # C1 NEL
        (b"obs://BKT/a.mp4\n", 1, "not a valid OBS bucket name"),
        (b"obs://bkt/a.mp4\nobs://x/a.mp4\n", 2, "not a valid OBS bucket name"),
        (b"\xff\xfeo\x00b\x00s\x00", 1, "not UTF-8"),
    ],
)
def test_bad_listing_line_names_file_and_line(
    tmp_path: Path, content: bytes, line: int, fragment: str
) -> None:
    """A listing line that cannot be used is a ManifestError at listing:line."""
    source = listing(tmp_path, content)
    with pytest.raises(ManifestError) as info:
        expand(make_manifest(tmp_path, source))
    assert info.value.where == f"{source.listing}:{line}"
    assert fragment in info.value.what


def test_bad_line_is_found_before_the_first_object(tmp_path: Path) -> None:
    """The first pass reads every listing to the end, so nothing is yielded before an error."""
    source = listing(tmp_path, "obs://bkt/a.mp4\nobs://bkt/b.mp4\ngarbage\n")
    objects = iter_objects(make_manifest(tmp_path, source), ExpandStats(), Warnings())
    with pytest.raises(ManifestError) as info:
        next(objects)
    assert info.value.where == f"{source.listing}:3"


def test_expansion_streams(tmp_path: Path) -> None:
    """Given the repeats, the listing itself is read lazily: objects come before a later error."""
    source = listing(tmp_path, "obs://bkt/a.mp4\nobs://bkt/b.mp4\ngarbage\n")
    objects = iter_objects(
        make_manifest(tmp_path, source), ExpandStats(), Warnings(), Repeats(HashBuckets())
    )
    assert next(objects) == ObjectRef("bkt", "a.mp4")
    assert next(objects) == ObjectRef("bkt", "b.mp4")
    with pytest.raises(ManifestError):
        next(objects)


def test_repeats_are_few_for_distinct_paths(tmp_path: Path) -> None:
    """Memory for de-duplication follows the repeats, not the listing: 20,000 distinct paths
    leave a handful of filter false alarms at most, 500 repeated ones leave 500."""
    distinct = "".join(f"obs://bkt/v/{i:06d}.mp4\n" for i in range(20_000))
    manifest = make_manifest(tmp_path, listing(tmp_path, distinct))
    assert len(find_repeats(manifest)) < 50
    again = "".join(f"obs://bkt/v/{i:06d}.mp4\n" for i in range(0, 20_000, 40))
    second = listing(tmp_path, again, name="again.txt")
    repeats = find_repeats(make_manifest(tmp_path, listing(tmp_path, distinct), second))
    assert 500 <= len(repeats) < 550


def test_duplicates_exact_when_the_filter_is_saturated(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a filter far too small every path is a false alarm; the result is still exact."""
    keys = [f"obs://bkt/{i % 700}.mp4" for i in range(1_000)]  # 300 repeats
    manifest = make_manifest(tmp_path, listing(tmp_path, "\n".join(keys)))
    normal, normal_stats, _ = expand(manifest)
    monkeypatch.setattr(sources, "_FILTER_BITS", 64)
    monkeypatch.setattr(sources, "_QUICK_BITS_MIN", 64)
    monkeypatch.setattr(sources, "_QUICK_BITS_MAX", 64)
    assert len(find_repeats(manifest)) > 650
    saturated, saturated_stats, _ = expand(manifest)
    assert saturated == normal == list(dict.fromkeys(keys))
    assert saturated_stats.duplicates == normal_stats.duplicates == 300


def test_listing_changed_between_passes_reads_what_the_first_pass_read(tmp_path: Path) -> None:
    """A listing rewritten after the first pass: the later pass reads the first pass's bytes
    (a snapshot), so no video comes twice, and says the listing changed."""
    source = listing(tmp_path, "obs://bkt/a.mp4\n")
    assert source.listing is not None
    manifest = make_manifest(tmp_path, source)
    repeats = find_repeats(manifest)
    source.listing.write_text("obs://bkt/a.mp4\nobs://bkt/a.mp4\nobs://bkt/b.mp4\n")
    warn = Warnings()
    urls = [ref.url for ref in iter_objects(manifest, ExpandStats(), warn, repeats)]
    assert urls == ["obs://bkt/a.mp4"]
    assert len(warn.messages) == 1
    assert "changed after this run first read it" in warn.messages[0]


def test_listing_appended_to_during_a_later_pass_yields_nothing_twice(tmp_path: Path) -> None:
    """The issue's case: a cron job appends to the listing while the submitting pass reads
    it. The appended line repeats a video the first pass saw once; reading the original, the
    pass yielded it a second time (a second job); reading the snapshot, never."""
    source = listing(tmp_path, "".join(f"obs://bkt/{i}.mp4\n" for i in range(3)))
    assert source.listing is not None
    manifest = make_manifest(tmp_path, source)
    repeats = find_repeats(manifest)
    urls: list[str] = []
    for ref in iter_objects(manifest, ExpandStats(), Warnings(), repeats):
        if not urls:
            with source.listing.open("a") as handle:
                handle.write("obs://bkt/0.mp4\nobs://bkt/new.mp4\n")
        urls.append(ref.url)
    assert urls == [f"obs://bkt/{i}.mp4" for i in range(3)]


def test_every_pass_of_a_run_reads_the_same_bytes(tmp_path: Path) -> None:
    """However often the listing changes between passes, each pass sees the first pass's
    listing: the counting pass and the submitting pass agree."""
    source = listing(tmp_path, "obs://bkt/a.mp4\nobs://bkt/a.mp4\n")
    assert source.listing is not None
    manifest = make_manifest(tmp_path, source)
    repeats = find_repeats(manifest)
    passes = []
    for extra in ("obs://bkt/b.mp4\n", "obs://bkt/a.mp4\n"):
        with source.listing.open("a") as handle:
            handle.write(extra)
        passes.append([r.url for r in iter_objects(manifest, ExpandStats(), Warnings(), repeats)])
    assert passes == [["obs://bkt/a.mp4"], ["obs://bkt/a.mp4"]]


def test_listing_growing_while_the_first_pass_reads_it_is_an_error(tmp_path: Path) -> None:
    """A listing still being written when the first pass reaches its end: an error before
    anything is sent (its last line may be half written), naming the listing."""
    source = listing(tmp_path, "obs://bkt/a.mp4\nobs://bkt/b.mp4\n")
    assert source.listing is not None
    listing_path = source.listing

    def append_once(_url: str) -> None:
        if listing_path.stat().st_size < 100:
            with listing_path.open("a") as handle:
                handle.write("obs://bkt/c.mp4\n" * 10)

    with pytest.raises(ManifestError) as info:
        find_repeats(make_manifest(tmp_path, source), each=append_once)
    assert info.value.where == str(listing_path)
    assert "changed while" in info.value.what


def test_a_listing_piped_in_is_read_once_into_its_snapshot(tmp_path: Path) -> None:
    """`listing = "/dev/fd/63"` from `<(obsutil ls ...)`: a pipe can be read once, so every
    pass reads the first pass's copy; its size (0 for a pipe) is no sign of a change. It
    used to fail with "the listing changed while batchsubmit was reading it"."""
    fifo = tmp_path / "listing.fifo"
    os.mkfifo(fifo)
    lines = "".join(f"obs://bkt/{i}.mp4\n" for i in range(50))

    def feed() -> None:
        with fifo.open("w") as handle:
            handle.write(lines)

    writer = threading.Thread(target=feed)
    writer.start()
    manifest = make_manifest(
        tmp_path, Source(where="source[0]", listing=fifo, paths=(), include=(), exclude=())
    )
    repeats = find_repeats(manifest)
    writer.join()
    warn = Warnings()
    passes = [[r.url for r in iter_objects(manifest, ExpandStats(), warn, repeats)] for _ in "ab"]
    assert passes[0] == passes[1] == [f"obs://bkt/{i}.mp4" for i in range(50)]
    assert warn.messages == []


def test_a_listing_named_twice_reads_one_snapshot(tmp_path: Path) -> None:
    """Two sources naming one listing file: every path in it is a repeat, yielded once."""
    first = listing(tmp_path, "obs://bkt/a.mp4\nobs://bkt/b.mp4\n")
    second = dataclasses.replace(first, where="source[1]")
    urls, stats, _ = expand(make_manifest(tmp_path, first, second))
    assert urls == ["obs://bkt/a.mp4", "obs://bkt/b.mp4"]
    assert stats.duplicates == 2


def test_snapshots_are_removed_with_the_run(tmp_path: Path) -> None:
    """The private copies leave no file behind once the repeats are dropped."""
    manifest = make_manifest(tmp_path, listing(tmp_path, "obs://bkt/a.mp4\n"))
    repeats = find_repeats(manifest)
    directory = repeats.snapshots._directory
    assert directory is not None
    assert directory.is_dir()
    del repeats
    gc.collect()
    assert not directory.exists()


def test_listing_with_a_bom_is_read(tmp_path: Path) -> None:
    """A listing saved by a Windows editor starts with a UTF-8 BOM: read, not refused."""
    source = listing(tmp_path, b"\xef\xbb\xbfobs://bkt/a.mp4\r\nobs://bkt/b.mp4\r\n")
    urls, _, _ = expand(make_manifest(tmp_path, source))
    assert urls == ["obs://bkt/a.mp4", "obs://bkt/b.mp4"]


def test_key_over_1024_bytes_is_an_error_at_its_line(tmp_path: Path) -> None:
    """OBS keys are at most 1,024 bytes of UTF-8: a longer one is an error at listing:line."""
    ok = "obs://bkt/" + "视" * 340 + ".mp4"  # 1,024 bytes
    long = "obs://bkt/" + "视" * 341 + ".mp4"  # 1,027 bytes
    source = listing(tmp_path, f"{ok}\n{long}\n")
    with pytest.raises(ManifestError) as info:
        expand(make_manifest(tmp_path, source))
    assert info.value.where == f"{source.listing}:2"
    assert "1027 bytes" in info.value.what
    assert "at most 1,024 bytes" in info.value.what
    urls, _, _ = expand(make_manifest(tmp_path, listing(tmp_path, f"{ok}\n")))
    assert urls == [ok]


def test_explicit_path_over_1024_bytes_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ManifestError) as info:
        expand(make_manifest(tmp_path, explicit("obs://bkt/" + "k" * 1025)))
    assert info.value.where.endswith("source[1].paths[0]")


@pytest.mark.parametrize(
    ("make", "said"),
    [
        (lambda p: p.mkdir(), "is a directory"),
        (lambda p: p.symlink_to(p), "symbolic link loop"),
    ],
)
def test_listing_that_is_not_a_file_says_what_it_is(
    tmp_path: Path, make: Callable[[Path], object], said: str
) -> None:
    """A listing path that became a directory or a symlink loop says so, not "no such file"."""
    path = tmp_path / "listing.txt"
    make(path)
    source = Source(where="source[0]", listing=path, paths=(), include=(), exclude=())
    with pytest.raises(ManifestError) as info:
        expand(make_manifest(tmp_path, source))
    assert said in info.value.what


def test_a_spooled_prefix_that_listed_nothing_is_counted(tmp_path: Path) -> None:
    """A live prefix whose spool file is empty is counted in ``empty_prefixes``."""
    empty = dataclasses.replace(
        listing(tmp_path, ""), listed_from="obs://bkt/dir/", where="source[0]"
    )
    full = dataclasses.replace(
        listing(tmp_path, "obs://bkt/a.mp4\n", name="full.txt"), listed_from="obs://bkt/a/"
    )
    _, stats, _ = expand(make_manifest(tmp_path, empty, full))
    assert stats.empty_prefixes == ["obs://bkt/dir/"]


def test_listing_gone_before_reading(tmp_path: Path) -> None:
    """A listing deleted after the manifest was read is a ManifestError naming it."""
    source = listing(tmp_path, "obs://bkt/a.mp4\n")
    assert source.listing is not None
    source.listing.unlink()
    with pytest.raises(ManifestError) as info:
        expand(make_manifest(tmp_path, source))
    assert info.value.where == str(source.listing)
    assert "cannot read listing" in info.value.what


def test_bad_explicit_path_names_the_manifest_key(tmp_path: Path) -> None:
    """A bad explicit path (one parse_manifest did not check) names the manifest and the key."""
    with pytest.raises(ManifestError) as info:
        expand(make_manifest(tmp_path, explicit("obs://bkt/a.mp4", "s3://bkt/b.mp4")))
    assert info.value.where == f"{tmp_path / 'm.toml'}: source[1].paths[1]"


def test_object_ref_url() -> None:
    """ObjectRef.url is the obs://bucket/key identity used everywhere downstream."""
    assert ObjectRef("bkt", "a b/视频.mp4").url == "obs://bkt/a b/视频.mp4"


def test_many_lines_stream_in_constant_memory(tmp_path: Path) -> None:
    """A large listing (20k lines, many duplicates and non-videos) expands correctly."""
    lines = []
    for i in range(20_000):
        lines.append(f"obs://bkt/d{i % 7}/v{i % 5000}.{'mp4' if i % 3 else 'txt'}")
    urls, stats, _ = expand(make_manifest(tmp_path, listing(tmp_path, "\n".join(lines))))
    expected = list(dict.fromkeys(line for line in lines if line.endswith(".mp4")))
    assert urls == expected
    assert stats.objects == 20_000
    assert stats.filtered == sum(1 for line in lines if line.endswith(".txt"))
    assert stats.duplicates == sum(1 for line in lines if line.endswith(".mp4")) - len(expected)


def test_snapshots_of_dead_runs_are_swept_and_no_others(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A killed run's snapshot or spool directory is removed by the next run; a live
    process's (this one's, pid 1's) and anything not named like one stay. An older version's
    unnamed directory (no pid in its name) goes once it is 8 days old, not before. A live
    prefix's spool directory used to stay forever after a SIGKILL."""
    import os
    import subprocess
    import sys
    import tempfile
    import time

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    pid = dead.stdout.strip()
    names = {
        "dead": f"batchsubmit-listings-{pid}-abc",
        "dead spool": f"batchsubmit-spool-{pid}-k2x_9qzv",
        "self": f"batchsubmit-listings-{os.getpid()}-abc",
        "self spool": f"batchsubmit-spool-{os.getpid()}-abc",
        "init": "batchsubmit-listings-1-abc",
        "other": "batchsubmit-listings-abc",
        "old unnamed": "batchsubmit-listings-0cwsa550",
        "old unnamed spool": "batchsubmit-0__w30oo",
        "new unnamed": "batchsubmit-1ik80pe2",
        "old, not ours": "batchsubmit-notes-2024",
        # named like tempfile's, but an operator's: not private, or holding their own files
        "operator's": "batchsubmit-listings",
        "operator's, private": "batchsubmit-archives",
    }
    for name in names.values():
        (tmp_path / name).mkdir(mode=0o700)
        (tmp_path / name / "0-listing.txt").write_text("obs://b/k.mp4\n")
    (tmp_path / names["old unnamed spool"] / "prefix-0.txt").write_text("obs://b/k.mp4\n")
    (tmp_path / names["operator's"]).chmod(0o755)
    (tmp_path / names["operator's, private"] / "march.tar").write_bytes(b"")
    nine_days_ago = time.time() - 9 * 24 * 3600
    old = ("old unnamed", "old unnamed spool", "old, not ours", "other", "operator's",
           "operator's, private")  # fmt: skip
    for key in old:
        os.utime(tmp_path / names[key], (nine_days_ago, nine_days_ago))
    sources.sweep_abandoned_snapshots()
    left = {path.name for path in tmp_path.iterdir()}
    kept = ("self", "self spool", "init", "other", "new unnamed", "old, not ours", "operator's",
            "operator's, private")  # fmt: skip
    assert left == {names[key] for key in kept}
