"""The TOML manifest: valid forms read into frozen values, every mistake located by file and key."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from batchsubmit.errors import ManifestError, UsageError
from batchsubmit.manifest import (
    DESCRIPTION_MAX,
    NAME_FIELDS,
    Manifest,
    load_manifest,
    parse_manifest,
    parse_obs_url,
)

SERVICE = """\
[service]
name = "c-video-analysis"
version = "1.0"
region = "cn-north-4"
"""
JOB = """\
[job]
output = "obs://out-bucket/results/"
"""
SOURCE = """\
[[source]]
paths = ["obs://my-bucket/videos/a.mp4"]
"""


def doc(service: str = SERVICE, job: str = JOB, source: str = SOURCE, top: str = "") -> str:
    """A manifest from its parts; an empty part is left out."""
    return "\n".join(part for part in (top, service, job, source) if part)


def write(tmp_path: Path, text: str, name: str = "m.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def line_of(text: str, marker: str) -> int:
    """The 1-based number of the only line of ``text`` that contains ``marker``."""
    found = [n for n, line in enumerate(text.splitlines(), 1) if marker in line]
    assert len(found) == 1, (marker, found)
    return found[0]


# -- valid manifests ----------------------------------------------------------------------------


def test_minimal_manifest(tmp_path: Path) -> None:
    """The smallest valid manifest reads into the documented values and defaults."""
    path = write(tmp_path, doc())
    manifest = load_manifest(path)
    assert manifest.path == path
    assert manifest.service.name == "c-video-analysis"
    assert manifest.service.version == "1.0"
    assert manifest.service.endpoint == "https://iva.cn-north-4.myhuaweicloud.com"
    assert manifest.service.project_id is None
    assert manifest.job.output_bucket == "out-bucket"
    assert manifest.job.output_path == "results/"
    assert manifest.job.name == "{stem}-{hash}"
    assert manifest.job.description is None
    assert dict(manifest.job.body) == {}
    (source,) = manifest.sources
    assert source.where == "source[0]"
    assert source.listing is None
    assert source.paths == ("obs://my-bucket/videos/a.mp4",)
    assert source.include == ()
    assert source.exclude == ()


@pytest.mark.parametrize("char", ["\\u0001", "\\u001b", "\\u007f", "\\u0085", "\\u009b"])
@pytest.mark.parametrize("where", ["paths", "prefix"])
def test_a_control_character_in_a_source_path_is_refused(
    tmp_path: Path, char: str, where: str
) -> None:
    """C1 controls too (U+0085 NEL, U+009B CSI): a results row is one line without them, so
    a CSV row of "late\u0085arrival.mp4" was written with a space there, never matched its
    video again, and the video was created again every night (JSONL: the next night stopped
    on a "damaged" row). Listings and live prefixes already refused them."""
    value = (
        f'["obs://bkt/v/late{char}arrival.mp4"]' if where == "paths" else f'"obs://bkt/v{char}/"'
    )
    text = doc(source=f"[[source]]\n{where} = {value}\n")
    with pytest.raises(ManifestError, match=rf"source\[0\]\.{where}.*: control character"):
        load_manifest(write(tmp_path, text))


def test_load_accepts_a_string_path(tmp_path: Path) -> None:
    """load_manifest takes a str as well as a Path."""
    path = write(tmp_path, doc())
    assert load_manifest(str(path)).path == path


@pytest.mark.parametrize(
    "region",
    ["cn-north-4", "cn-north-1", "cn-east-3", "ap-southeast-1", "ap-southeast-3", "af-south-1"],
)
def test_region_gives_the_iva_endpoint(tmp_path: Path, region: str) -> None:
    """service.region becomes https://iva.{region}.myhuaweicloud.com."""
    service = SERVICE.replace("cn-north-4", region)
    manifest = load_manifest(write(tmp_path, doc(service=service)))
    assert manifest.service.endpoint == f"https://iva.{region}.myhuaweicloud.com"


@pytest.mark.parametrize(
    ("endpoint", "expected"),
    [
        ("https://iva.cn-north-4.myhuaweicloud.com", "https://iva.cn-north-4.myhuaweicloud.com"),
        ("https://iva.cn-north-4.myhuaweicloud.com/", "https://iva.cn-north-4.myhuaweicloud.com"),
        ("http://127.0.0.1:8080", "http://127.0.0.1:8080"),
        ("http://localhost:8080/", "http://localhost:8080"),
        ("https://[::1]:8443", "https://[::1]:8443"),
        ("http://[fe80::1]/", "http://[fe80::1]"),
        (
            "HTTPS://IVA.CN-North-4.myhuaweicloud.com:443/",
            "https://iva.cn-north-4.myhuaweicloud.com",
        ),
        ("Http://127.0.0.1:80", "http://127.0.0.1"),
    ],
)
def test_endpoint_form(tmp_path: Path, endpoint: str, expected: str) -> None:
    """service.endpoint (instead of region) is normalised: no trailing '/', scheme and host in
    lower case (they are case-insensitive), no default port."""
    service = SERVICE.replace('region = "cn-north-4"', f'endpoint = "{endpoint}"')
    manifest = load_manifest(write(tmp_path, doc(service=service)))
    assert manifest.service.endpoint == expected


@pytest.mark.parametrize("project_id", ["0123456789abcdef0123456789abcdef"])
def test_project_id(tmp_path: Path, project_id: str) -> None:
    """service.project_id is read as given (32 lower-case hex digits, as VAS takes it)."""
    service = SERVICE + f'project_id = "{project_id}"\n'
    assert load_manifest(write(tmp_path, doc(service=service))).service.project_id == project_id


def test_job_body_passes_through(tmp_path: Path) -> None:
    """[job.body] reaches the JobTemplate unchanged, nested tables and extra outputs included."""
    job = (
        JOB
        + """
[job.body]
resource_order_id = "order-1"
edge_pool_id = "pool-7"

[job.body.service_config.common]
threshold = 0.5
labels = ["person", "car"]
enabled = true

[job.body.output.webhook]
url = "https://example.com/hook"
headers = { X-Token = "abc" }
"""
    )
    manifest = load_manifest(write(tmp_path, doc(job=job)))
    assert manifest.job.body == {
        "resource_order_id": "order-1",
        "edge_pool_id": "pool-7",
        "service_config": {
            "common": {"threshold": 0.5, "labels": ["person", "car"], "enabled": True}
        },
        "output": {"webhook": {"url": "https://example.com/hook", "headers": {"X-Token": "abc"}}},
    }


@pytest.mark.parametrize(
    "template",
    ["{stem}", "{stem}-{hash}", "{bucket}_{folder}_{filename}_{ext}_{key}", "job-{hash}", "x"],
)
def test_name_templates_accepted(tmp_path: Path, template: str) -> None:
    """job.name may use any name placeholder, or none (a hash is added later)."""
    job = JOB + f'name = "{template}"\n'
    assert load_manifest(write(tmp_path, doc(job=job))).job.name == template


@pytest.mark.parametrize(
    "template",
    [
        "{source}",
        "Video {filename} from {bucket}",
        "{{literal braces}} {stem}",
        "x" * DESCRIPTION_MAX,
        "x" * DESCRIPTION_MAX + "{key}",
    ],
)
def test_description_templates_accepted(tmp_path: Path, template: str) -> None:
    """job.description may use {source} too, and up to 500 characters of fixed text."""
    job = JOB + f'description = "{template}"\n'
    assert load_manifest(write(tmp_path, doc(job=job))).job.description == template


def test_all_name_fields_are_documented() -> None:
    """The name placeholders are exactly the ones jobs.template_fields provides (minus source)."""
    assert {"stem", "filename", "ext", "folder", "bucket", "key", "hash"} == NAME_FIELDS


def test_listing_is_relative_to_the_manifest(tmp_path: Path) -> None:
    """A listing path is resolved beside the manifest, not the working directory."""
    (tmp_path / "lists").mkdir()
    (tmp_path / "lists" / "a.txt").write_text("obs://b/x.mp4\n")
    source = '[[source]]\nlisting = "lists/a.txt"\ninclude = ["*.mp4"]\nexclude = ["*raw*"]\n'
    manifest = load_manifest(write(tmp_path, doc(source=source)))
    (found,) = manifest.sources
    assert found.listing == tmp_path / "lists" / "a.txt"
    assert found.paths == ()
    assert found.include == ("*.mp4",)
    assert found.exclude == ("*raw*",)


def test_several_sources_keep_their_order(tmp_path: Path) -> None:
    """Each [[source]] is kept, in file order, named source[i]."""
    (tmp_path / "l.txt").write_text("")
    sources = (
        '[[source]]\npaths = ["obs://bk1/a.mp4"]\n\n'
        '[[source]]\nlisting = "l.txt"\n\n'
        '[[source]]\npaths = ["obs://bk3/c.mp4", "obs://bk3/d.mp4"]\n'
    )
    manifest = load_manifest(write(tmp_path, doc(source=sources)))
    assert [s.where for s in manifest.sources] == ["source[0]", "source[1]", "source[2]"]
    assert manifest.sources[2].paths == ("obs://bk3/c.mp4", "obs://bk3/d.mp4")


def test_empty_paths_list_is_a_source(tmp_path: Path) -> None:
    """paths = [] is an explicit (empty) choice, not 'neither listing nor paths'."""
    manifest = load_manifest(write(tmp_path, doc(source="[[source]]\npaths = []\n")))
    assert manifest.sources[0].paths == ()


def test_manifest_is_frozen(tmp_path: Path) -> None:
    """The Manifest and its parts cannot be changed once read."""
    manifest = load_manifest(write(tmp_path, doc()))
    with pytest.raises(dataclasses.FrozenInstanceError):
        manifest.service.name = "other"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        manifest.sources = ()  # type: ignore[misc]
    assert isinstance(manifest, Manifest)


def test_parse_manifest_without_a_file(tmp_path: Path) -> None:
    """parse_manifest validates text directly; the path only locates listings and errors."""
    manifest = parse_manifest(doc(), tmp_path / "virtual.toml")
    assert manifest.path == tmp_path / "virtual.toml"


# -- parse_obs_url ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "bucket", "key"),
    [
        ("obs://my-bucket/videos/a.mp4", "my-bucket", "videos/a.mp4"),
        ("obs://my-bucket/", "my-bucket", ""),
        ("obs://my-bucket", "my-bucket", ""),
        ("obs://b.c-d/a b/视频.mp4", "b.c-d", "a b/视频.mp4"),
        ("obs://abc//double", "abc", "/double"),
    ],
)
def test_parse_obs_url(url: str, bucket: str, key: str) -> None:
    """obs://bucket/key splits at the first '/', the key kept exactly."""
    assert parse_obs_url(url) == (bucket, key)


@pytest.mark.parametrize(
    "url",
    [
        "s3://bucket/a.mp4",
        "bucket/a.mp4",
        "OBS://bucket/a.mp4",
        "obs://Bucket/a.mp4",
        "obs://ab/a.mp4",
        "obs:///a.mp4",
        "obs://-bucket/a.mp4",
        "obs://bucket-/a.mp4",
        "obs://my..bucket/a.mp4",
        "obs://my_bucket/a.mp4",
        "obs://" + "b" * 64 + "/a.mp4",
        "obs://my.-bucket/a.mp4",  # OBS's rules, as the emulator checks them (vas.valid_bucket)
        "obs://my-.bucket/a.mp4",
        "obs://192.168.1.1/a.mp4",
    ],
)
def test_parse_obs_url_rejects(url: str) -> None:
    """Anything but obs:// with a valid OBS bucket name is a ValueError."""
    with pytest.raises(ValueError, match="obs"):
        parse_obs_url(url)


# -- errors -------------------------------------------------------------------------------------


def expect_error(path: Path, text: str, key: str, marker: str | None, fragment: str) -> None:
    """Loading raises a ManifestError at file[:line], starting with the key path."""
    with pytest.raises(ManifestError) as info:
        load_manifest(path)
    error = info.value
    where = f"{path}:{line_of(text, marker)}" if marker else str(path)
    assert error.where == where
    assert error.what.startswith(f"{key}: "), error.what
    assert fragment in error.what
    assert str(error) == f"{where}: {error.what}"
    assert isinstance(error, UsageError)


ERRORS = [
    # unknown keys at each level
    ("unknown-top", doc(top='colour = "red"\n'), "colour", 'colour = "red"', "unknown key"),
    (
        "unknown-service",
        doc(service=SERVICE + 'colour = "red"\n'),
        "service.colour",
        'colour = "red"',
        "unknown key (expected one of: endpoint, name, obs_endpoint, project_id, region, version)",
    ),
    (
        "unknown-job",
        doc(job=JOB + "colour = 1\n"),
        "job.colour",
        "colour = 1",
        "expected one of: body, description, name, output",
    ),
    (
        "unknown-source",
        doc(source=SOURCE + 'colour = "x"\n'),
        "source[0].colour",
        'colour = "x"',
        "expected one of: exclude, include, listing, paths",
    ),
    (
        "unknown-second-source",
        doc(source=SOURCE + '\n[[source]]\npaths = []\nlisted = "x"\n'),
        "source[1].listed",
        'listed = "x"',
        "unknown key",
    ),
    (
        "unknown-table",
        doc(top="", source=SOURCE + "\n[extra]\na = 1\n"),
        "extra",
        "[extra]",
        "unknown key",
    ),
    # missing keys
    ("missing-service", doc(service=""), "service", None, "missing required key"),
    ("missing-job", doc(job=""), "job", None, "missing required key"),
    ("missing-source", doc(source=""), "source", None, "missing required key"),
    (
        "missing-name",
        doc(service=SERVICE.replace('name = "c-video-analysis"\n', "")),
        "service.name",
        None,
        "missing required key",
    ),
    (
        "missing-version",
        doc(service=SERVICE.replace('version = "1.0"\n', "")),
        "service.version",
        None,
        "missing required key",
    ),
    (
        "missing-output",
        doc(job='[job]\nname = "{stem}"\n'),
        "job.output",
        None,
        "missing required key",
    ),
    (
        "missing-region",
        doc(service=SERVICE.replace('region = "cn-north-4"\n', "")),
        "service.region",
        None,
        "give region (or endpoint)",
    ),
    # wrong types
    (
        "service-not-table",
        doc(service="", top='service = "x"\n'),
        "service",
        'service = "x"',
        "must be a table, not a string",
    ),
    (
        "name-integer",
        doc(service=SERVICE.replace('name = "c-video-analysis"', "name = 5")),
        "service.name",
        "name = 5",
        "must be a string, not an integer",
    ),
    (
        "version-number",
        doc(service=SERVICE.replace('version = "1.0"', "version = 1.0")),
        "service.version",
        "version = 1.0",
        "must be a string, not a number",
    ),
    (
        "job-name-boolean",
        doc(job=JOB + "name = true\n"),
        "job.name",
        "name = true",
        "must be a string, not a boolean",
    ),
    (
        "paths-string",
        doc(source='[[source]]\npaths = "obs://b/a.mp4"\n'),
        "source[0].paths",
        "paths =",
        "must be a list of strings, not a string",
    ),
    (
        "paths-item-integer",
        doc(source='[[source]]\npaths = ["obs://bkt/a.mp4", 7]\n'),
        "source[0].paths[1]",
        "paths =",
        "must be a string, not an integer",
    ),
    (
        "include-table",
        doc(source=SOURCE + "include = { a = 1 }\n"),
        "source[0].include",
        "include =",
        "must be a list of strings, not a table",
    ),
    (
        "body-not-table",
        doc(job=JOB + "body = 3\n"),
        "job.body",
        "body = 3",
        "must be a table, not an integer",
    ),
    (
        "body-output-not-table",
        doc(job=JOB + '[job.body]\noutput = "x"\n'),
        "job.body.output",
        'output = "x"',
        "must be a table, not a string",
    ),
    (
        "source-not-array",
        doc(source='[source]\npaths = ["obs://bkt/a.mp4"]\n'),
        "source",
        "[source]",
        "give at least one [[source]] table",
    ),
    ("source-empty", doc(source="", top="source = []\n"), "source", "source = []", "at least one"),
    (
        "source-item-not-table",
        doc(source="", top="source = [1]\n"),
        "source[0]",
        "source = [1]",
        "must be a table, not an integer",
    ),
    # bad service name, version, region, endpoint, project id
    *[
        (
            f"service-name-{bad}",
            doc(service=SERVICE.replace("c-video-analysis", bad)),
            "service.name",
            f'name = "{bad}"',
            "is not a VAS service name",
        )
        for bad in ["", "-video", "video analyze", "视频", "a/b", "x" * 65]
    ],
    (
        "version-blank",
        doc(service=SERVICE.replace('"1.0"', '"  "')),
        "service.version",
        'version = "  "',
        "must not be empty",
    ),
    *[
        (
            f"version-{bad}",
            doc(service=SERVICE.replace('"1.0"', f'"{bad}"')),
            "service.version",
            f'version = "{bad}"',
            "is not a VAS service version",
        )
        for bad in ["v1", "1", "1.0.0", "1000.0", " 1.0", "1,0"]
    ],
    *[
        (
            f"region-{bad}",
            doc(service=SERVICE.replace("cn-north-4", bad)),
            "service.region",
            f'region = "{bad}"',
            "is not a region id",
        )
        for bad in ["", "CN-NORTH-4", "cn_north_4", "north", "cn-north-4.evil.com"]
    ],
    (
        "region-and-endpoint",
        doc(service=SERVICE + 'endpoint = "https://iva.example.com"\n'),
        "service.endpoint",
        "endpoint =",
        "either region or endpoint, not both",
    ),
    *[
        (
            f"endpoint-{index}",
            doc(service=SERVICE.replace('region = "cn-north-4"', f'endpoint = "{bad}"')),
            "service.endpoint",
            "endpoint =",
            "is not an http(s) URL without a path",
        )
        for index, bad in enumerate(
            [
                "",
                "iva.cn-north-4.myhuaweicloud.com",
                "ftp://iva.example.com",
                "https://iva.example.com/v2",
                "https://iva.example.com?x=1",
                "https://user@iva.example.com",
                "https://iva.example.com:123456",
                "https://iva.example.com:99999",
            ]
        )
    ],
    *[
        (
            f"project-id-{index}",
            doc(service=SERVICE + f'project_id = "{bad}"\n'),
            "service.project_id",
            "project_id =",
            "is not a project id (32 lower-case hex digits",
        )
        for index, bad in enumerate(
            ["has space", "my_project-1", "0123456789ABCDEF0123456789ABCDEF", "0" * 33]
        )
    ],
    # bad output URL
    *[
        (
            f"output-{index}",
            doc(job=f'[job]\noutput = "{bad}"\n'),
            "job.output",
            "output =",
            "e.g. obs://out-bucket/results/",
        )
        for index, bad in enumerate(["", "s3://out/x/", "obs://Out/x/", "out-bucket/results/"])
    ],
    # templates
    *[
        (
            f"name-template-{index}",
            doc(job=JOB + f'name = "{bad}"\n'),
            "job.name",
            f'name = "{bad}"',
            fragment,
        )
        for index, (bad, fragment) in enumerate(
            [
                ("{nope}", "unknown placeholder {nope}"),
                ("{source}", "unknown placeholder {source}"),
                ("{stem!r}", "{stem!r}: a placeholder takes no conversion or format here"),
                ("{stem:>10}", "{stem:>10}: a placeholder takes no conversion"),
                ("{hash!s:x}", "{hash!s:x}: a placeholder takes no"),
                ("{}", "unknown placeholder {}"),
                ("{0}", "unknown placeholder {0}"),
                ("{stem", "bad template"),
                ("stem}", "bad template"),
            ]
        )
    ],
    (
        "description-placeholder",
        doc(job=JOB + 'description = "from {where}"\n'),
        "job.description",
        "description =",
        "unknown placeholder {where}",
    ),
    (
        "description-too-long",
        doc(job=JOB + 'description = "' + "x" * 250 + "{stem}" + "y" * 251 + '"\n'),
        "job.description",
        "description =",
        "its fixed text alone is 501 characters; VAS takes at most 500",
    ),
    # reserved body fields
    *[
        (
            f"reserved-{field}",
            doc(job=JOB + f'\n[job.body]\n{field} = "x"\n'),
            f"job.body.{field}",
            f'{field} = "x"',
            "is built by batchsubmit",
        )
        for field in ["name", "description", "service_version", "input"]
    ],
    (
        "body-output-obs",
        doc(job=JOB + '\n[job.body.output.obs]\nbucket = "b"\n'),
        "job.body.output.obs",
        "[job.body.output.obs]",
        "set the OBS output with job.output",
    ),
    # sources
    (
        "listing-and-paths",
        doc(source=SOURCE + 'listing = "l.txt"\n'),
        "source[0]",
        "[[source]]",
        "give exactly one of listing",
    ),
    (
        "neither-listing-nor-paths",
        doc(source='[[source]]\ninclude = ["*.mp4"]\n'),
        "source[0]",
        "[[source]]",
        "give exactly one of listing",
    ),
    (
        "missing-listing-file",
        doc(source='[[source]]\nlisting = "nowhere.txt"\n'),
        "source[0].listing",
        "listing =",
        "no such listing file",
    ),
    *[
        (
            f"bad-path-{index}",
            doc(source=f'[[source]]\npaths = ["obs://ok-bucket/a.mp4", "{bad}"]\n'),
            "source[0].paths[1]",
            "paths =",
            fragment,
        )
        for index, (bad, fragment) in enumerate(
            [
                ("s3://bucket/a.mp4", "is not an obs:// path"),
                ("obs://Bucket/a.mp4", "is not a valid OBS bucket name"),
                ("obs://bucket", "names a folder, not a video"),
                ("obs://bucket/", "names a folder, not a video"),
                ("obs://bucket/videos/", "names a folder, not a video"),
            ]
        )
    ],
]


@pytest.mark.parametrize(
    ("text", "key", "marker", "fragment"),
    [pytest.param(*case[1:], id=case[0]) for case in ERRORS],
)
def test_manifest_errors(
    tmp_path: Path, text: str, key: str, marker: str | None, fragment: str
) -> None:
    """Each mistake is a ManifestError naming the file, the line where known, and the key path."""
    expect_error(write(tmp_path, text), text, key, marker, fragment)


def test_error_names_the_line_in_the_right_table(tmp_path: Path) -> None:
    """A bad job.name points at [job]'s name line, not [service]'s line of the same key."""
    text = doc(job=JOB + 'name = "{nope}"\n')
    path = write(tmp_path, text)
    with pytest.raises(ManifestError) as info:
        load_manifest(path)
    line = line_of(text, 'name = "{nope}"')
    assert info.value.where == f"{path}:{line}"


def test_error_in_the_second_source_names_its_line(tmp_path: Path) -> None:
    """A bad listing in the second [[source]] points at that source's line, not the first's."""
    (tmp_path / "ok.txt").write_text("")
    text = doc(source='[[source]]\nlisting = "ok.txt"\n\n[[source]]\nlisting = "gone.txt"\n')
    path = write(tmp_path, text)
    with pytest.raises(ManifestError) as info:
        load_manifest(path)
    assert info.value.where == f"{path}:{line_of(text, 'gone.txt')}"
    assert info.value.what.startswith("source[1].listing: no such listing file")


@pytest.mark.parametrize("odd", ["\u2028", "\u2029", "\x85"])
def test_a_unicode_line_separator_in_a_comment_or_string_does_not_shift_the_line(
    tmp_path: Path, odd: str
) -> None:
    """TOML breaks lines at LF only; U+2028 and friends are text a comment or a string may
    hold. Counted as breaks, they put every error after them lines too far down."""
    job = JOB + f'description = "a{odd}b"\nname = "{{nope}}"\n'
    text = doc(top=f"# a comment{odd}with a separator", job=job)
    path = write(tmp_path, text)
    with pytest.raises(ManifestError) as info:
        load_manifest(path)
    line = text.split("\n").index('name = "{nope}"') + 1
    assert info.value.where == f"{path}:{line}"
    deep = "[job.body.service_config.common]\nx = " + "[" * 5000 + "]" * 5000 + "\n"
    text = doc(top=f"# {odd}", job=JOB + deep)
    path = write(tmp_path, text)
    with pytest.raises(ManifestError) as info:
        load_manifest(path)
    line = text.split("\n").index(deep.split("\n")[1]) + 1
    assert info.value.where == f"{path}:{line}"


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ('[service]\nname = "x"\nversion = \n', 3),
        ('[service\nname = "x"\n', 1),
        (doc() + "\n[job]\n", 12),
        ('a = "unterminated\n', 1),
    ],
)
def test_toml_syntax_error_names_the_line(tmp_path: Path, text: str, line: int) -> None:
    """A TOML syntax error is a ManifestError at file:line, without tomllib's '(at line ...)'."""
    path = write(tmp_path, text)
    with pytest.raises(ManifestError) as info:
        load_manifest(path)
    assert info.value.where == f"{path}:{line}"
    assert info.value.what.startswith("TOML syntax error: ")
    assert "(at line" not in info.value.what


def test_missing_manifest_file(tmp_path: Path) -> None:
    """A manifest that does not exist is a ManifestError naming it."""
    path = tmp_path / "nope.toml"
    with pytest.raises(ManifestError) as info:
        load_manifest(path)
    assert info.value.where == str(path)
    assert "no such manifest file" in info.value.what


def test_manifest_not_utf8(tmp_path: Path) -> None:
    """A manifest that is not UTF-8 is a ManifestError, not a UnicodeDecodeError."""
    path = tmp_path / "m.toml"
    path.write_bytes(doc().encode() + b"\n# caf\xe9\n")
    with pytest.raises(ManifestError) as info:
        load_manifest(path)
    assert info.value.where == str(path)
    assert "not UTF-8" in info.value.what


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-be"])
def test_a_utf16_manifest_is_named_as_such(tmp_path: Path, encoding: str) -> None:
    """What Windows PowerShell's > writes: said to be UTF-16, with how to save it as UTF-8
    (it was "invalid start byte at byte 0")."""
    path = tmp_path / "m.toml"
    text = doc()
    path.write_bytes(("\ufeff" + text).encode("utf-16-be") if encoding == "utf-16-be"
                     else text.encode(encoding))  # fmt: skip
    with pytest.raises(ManifestError, match=r"UTF-16 text, not UTF-8 .*-Encoding utf8"):
        load_manifest(path)


def test_manifest_is_a_directory(tmp_path: Path) -> None:
    """A directory given as the manifest is a ManifestError, not an OSError."""
    with pytest.raises(ManifestError) as info:
        load_manifest(tmp_path)
    assert info.value.where == str(tmp_path)
    assert "cannot read" in info.value.what


# -- bounds on [job.body] -----------------------------------------------------------------------


def nested_tables(depth: int, root: str = "job.body") -> str:
    return f"[{root}." + ".".join(f"k{i}" for i in range(depth)) + "]\nx = 1\n"


@pytest.mark.parametrize(
    ("body", "said"),
    [
        (nested_tables(5000), "nested 33 levels deep; at most 32"),
        (nested_tables(40), "nested 33 levels deep; at most 32"),
        ("[job.body]\nx = " + "{a = " * 5000 + "1" + "}" * 5000 + "\n", "nested too deeply"),
        ("[job.body]\nx = " + "[" * 5000 + "1" + "]" * 5000 + "\n", "nested too deeply"),
        ("[job.body]\nx = " + "[" * 40 + "1" + "]" * 40 + "\n", "nested 33 levels deep"),
        ('[job.body]\nblob = "' + "x" * 70_000 + '"\n', "at most 65536"),
    ],
)
def test_job_body_nesting_and_size_are_bounded(tmp_path: Path, body: str, said: str) -> None:
    """A [job.body] nested thousands of levels deep is a ManifestError naming the manifest
    (and the key), not a RecursionError traceback; so is one too big to send."""
    path = write(tmp_path, doc(job=JOB + body))
    with pytest.raises(ManifestError) as raised:
        load_manifest(path)
    assert str(raised.value).startswith(str(path))
    assert said in str(raised.value)
    if "levels deep" in said:
        assert "job.body.k0.k1" in str(raised.value) or "job.body.x[0][0]" in str(raised.value)


def test_job_body_within_bounds_is_kept(tmp_path: Path) -> None:
    """32 levels (far more than any VAS body) are fine, in a service's own settings."""
    body = nested_tables(29, "job.body.service_config.common")
    manifest = load_manifest(write(tmp_path, doc(job=JOB + body)))
    assert "k28" in str(manifest.job.body)


@pytest.mark.parametrize(
    ("value", "key", "said"),
    [
        ("nan", "job.body.service_config.threshold", "not a number JSON can carry"),
        ("-inf", "job.body.service_config.threshold", "not a number JSON can carry"),
        ("inf", "job.body.service_config.threshold", "not a number JSON can carry"),
        ("99999999999999999999", "job.body.service_config.threshold", "out of range"),
        ("-9223372036854775809", "job.body.service_config.threshold", "out of range"),
    ],
)
def test_job_body_numbers_json_cannot_carry_are_refused(
    tmp_path: Path, value: str, key: str, said: str
) -> None:
    """NaN and infinities would be sent as null by the JSON encoder, integers beyond 64 bits
    crash it: refused before any request, the key named."""
    body = f"[job.body.service_config]\nthreshold = {value}\n"
    path = write(tmp_path, doc(job=JOB + body))
    with pytest.raises(ManifestError, match=rf"{key}: .*{said}"):
        load_manifest(path)


def test_job_body_numbers_are_passed_through(tmp_path: Path) -> None:
    """Ordinary numbers, negative ones and the 64-bit extremes included, reach the body."""
    body = "[job.body.service_config.common]\na = -1\nb = 0.5\nc = 9223372036854775807\n"
    manifest = load_manifest(write(tmp_path, doc(job=JOB + body)))
    assert manifest.job.body["service_config"]["common"] == {"a": -1, "b": 0.5, "c": 2**63 - 1}


@pytest.mark.parametrize(
    ("body", "said"),
    [
        (
            '[job.body.output.hosting]\ndata_catgory = ["person"]\n',
            "job.body.output.hosting.data_catgory: is not a field VAS takes here; "
            "allowed: data_category",
        ),
        (
            '[job.body.output.webhook]\nurl = "https://h.example/"\nheaders = "X-K: v"\n',
            "job.body.output.webhook.headers: must be an object, not a string",
        ),
        ("[job.body]\npriority = 1\n", "job.body.priority: is not a field VAS takes here"),
        (
            "[job.body.service_config]\nfps = 5\n",
            "job.body.service_config.fps: is not a field VAS takes here; allowed: common",
        ),
        ("[job.body]\nresource_order_id = 7\n", "must be a string, not an integer"),
        (
            '[job.body.timing]\ndays_of_week = ["mon"]\n',
            "job.body.timing.days_of_week[0]: must be an integer, not a string",
        ),
    ],
)
def test_job_body_fields_outside_vas_models_are_refused(
    tmp_path: Path, body: str, said: str
) -> None:
    """A misspelt field (VAS would refuse every create, or run every job without it) or one
    of the wrong type: an error naming the key and its line, before any request."""
    path = write(tmp_path, doc(job=JOB + body))
    with pytest.raises(ManifestError) as raised:
        load_manifest(path)
    assert said in str(raised.value)
    assert raised.value.where.startswith(f"{path}:")


# -- listing paths that are not files -----------------------------------------------------------


def test_listing_that_is_a_directory_says_so(tmp_path: Path) -> None:
    (tmp_path / "listing.txt").mkdir()
    path = write(tmp_path, doc(source='[[source]]\nlisting = "listing.txt"\n'))
    with pytest.raises(ManifestError, match=r"source\[0\].listing: .*listing.txt is a directory"):
        load_manifest(path)


def test_listing_that_is_a_symlink_loop_says_so(tmp_path: Path) -> None:
    (tmp_path / "listing.txt").symlink_to(tmp_path / "listing.txt")
    path = write(tmp_path, doc(source='[[source]]\nlisting = "listing.txt"\n'))
    with pytest.raises(ManifestError, match="symbolic link loop"):
        load_manifest(path)


def test_listing_that_is_a_dangling_symlink_says_so(tmp_path: Path) -> None:
    (tmp_path / "listing.txt").symlink_to(tmp_path / "gone.txt")
    path = write(tmp_path, doc(source='[[source]]\nlisting = "listing.txt"\n'))
    with pytest.raises(ManifestError, match="symbolic link to a file that does not exist"):
        load_manifest(path)


def test_listing_name_with_a_nul_is_an_error_naming_the_key(tmp_path: Path) -> None:
    """A TOML escape can put a NUL in a listing's name: os.stat raised ValueError (not
    OSError) for it and the run ended in a traceback."""
    path = write(tmp_path, doc(source='[[source]]\nlisting = "l\\u0000.txt"\n'))
    with pytest.raises(ManifestError, match=r"source\[0\].listing: .*NUL character"):
        load_manifest(path)


def test_missing_listing_still_says_no_such_listing_file(tmp_path: Path) -> None:
    path = write(tmp_path, doc(source='[[source]]\nlisting = "nope.txt"\n'))
    with pytest.raises(ManifestError, match="no such listing file"):
        load_manifest(path)


def test_a_manifest_saved_with_a_bom_is_read(tmp_path: Path) -> None:
    """Windows Notepad saves UTF-8 with a BOM; TOML has none, and the manifest failed as
    "line 1: Invalid statement"."""
    listing = tmp_path / "l.txt"
    listing.write_text("obs://b/v/a.mp4\n")
    path = tmp_path / "m.toml"
    text = _BOM_MANIFEST.format(listing=listing.name)
    path.write_bytes(b"\xef\xbb\xbf" + text.encode())
    assert load_manifest(path).service.name == "video-analyze"


_BOM_MANIFEST = """[service]
name = "video-analyze"
version = "1.0"
region = "cn-north-4"
project_id = "0123456789abcdef0123456789abcdef"
[job]
output = "obs://out/results/"
[[source]]
listing = "{listing}"
"""
