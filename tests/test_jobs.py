"""Job specs: names always valid, stable and unique per source; bodies shaped like the seed doc."""

from __future__ import annotations

import random
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from batchsubmit.jobs import NAME_MAX, JobSpec, SpecBuilder, source_hash, template_fields
from batchsubmit.manifest import DESCRIPTION_MAX, NAME_FIELDS, JobTemplate, Service, load_manifest
from batchsubmit.sources import ObjectRef

VALID_NAME = re.compile(r"^[A-Za-z0-9_-]{1,100}$")
SERVICE = Service(
    name="c-video-analysis",
    version="1.0",
    endpoint="https://iva.cn-north-4.myhuaweicloud.com",
    project_id=None,
)


def template(
    name: str = "{stem}-{hash}",
    description: str | None = None,
    body: Mapping[str, Any] | None = None,
) -> JobTemplate:
    return JobTemplate(
        output_bucket="out-bucket",
        output_path="results/",
        name=name,
        description=description,
        body=body if body is not None else {},
    )


def build(ref: ObjectRef, **kwargs: Any) -> JobSpec:
    return SpecBuilder(SERVICE, template(**kwargs)).build(ref)


def body_of(spec: JobSpec) -> dict[str, Any]:
    data = orjson.loads(spec.body)
    assert isinstance(data, dict)
    return data


HOSTILE_KEYS = [
    "a.mp4",
    "a b.mp4",
    "视频/监控录像.mp4",
    "🎬🎬🎬.mov",
    "....mp4",
    ".mp4",
    "noext",
    "dir/",
    "a" * 300 + ".mp4",
    "deep/" * 50 + "x.mp4",
    "x" * 1000,
    "punct/a,b;c=d&e+f%20g#h?i!j'k(l)m[n]o{p}~q.mp4",
    "-leading-dash.mp4",
    "_under_.mp4",
    "tab\tand\nnewline.mp4",
    "\u200b\u200d.mp4",
    " ",
    "",
]


@pytest.mark.parametrize("key", HOSTILE_KEYS)
@pytest.mark.parametrize(
    "name_template",
    ["{stem}-{hash}", "{stem}", "{key}", "{folder}/{filename}", "视频 {bucket} {ext}", "{hash}"],
)
def test_names_are_always_valid(key: str, name_template: str) -> None:
    """Whatever the key and template, the name matches VAS's ^[A-Za-z0-9_-]{1,100}$."""
    spec = build(ObjectRef("my-bucket", key), name=name_template)
    assert VALID_NAME.fullmatch(spec.name), spec.name
    assert body_of(spec)["name"] == spec.name


def test_names_are_valid_for_random_keys() -> None:
    """Random unicode keys of any length all give valid names."""
    rng = random.Random(7)
    alphabet = "aZ09-_. /视频éü🎬\u3000%&"
    builder = SpecBuilder(SERVICE, template())
    for _ in range(2000):
        key = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 400)))
        name = builder.build(ObjectRef("my-bucket", key)).name
        assert VALID_NAME.fullmatch(name), (key, name)


def test_source_hash_is_pinned() -> None:
    """The hash is stable across versions and runs: resume finds jobs by the names it makes."""
    assert source_hash("obs://my-bucket/videos/a.mp4") == "hign7sh4gwhp"
    assert source_hash("obs://bucket/a b.mp4") == "gb5keyyig2od"


def test_default_name_is_pinned() -> None:
    """The default name of a known source never changes (a changed name breaks resume)."""
    spec = build(ObjectRef("my-bucket", "videos/a.mp4"))
    assert spec.name == "a-hign7sh4gwhp"


def test_names_are_deterministic() -> None:
    """Two builders (two runs) give the same name for the same source."""
    ref = ObjectRef("my-bucket", "视频/a b" * 40 + ".mp4")
    first = SpecBuilder(SERVICE, template()).build(ref)
    second = SpecBuilder(SERVICE, template()).build(ref)
    assert first == second


@pytest.mark.parametrize(
    "keys",
    [
        ["a b.mp4", "a_b.mp4", "a?b.mp4", "a视b.mp4", "a  b.mp4", "a\tb.mp4"],
        ["dir/a.mp4", "dir/a.mov", "dir/a", "other/a.mp4", "dir/sub/a.mp4"],
        ["p" * 200 + "1.mp4", "p" * 200 + "2.mp4", "p" * 200 + "3.mp4"],
        ["A.mp4", "a.mp4"],
    ],
)
@pytest.mark.parametrize("name_template", ["{stem}-{hash}", "{stem}", "{folder}"])
def test_names_are_unique_when_keys_sanitise_alike(keys: list[str], name_template: str) -> None:
    """Keys whose sanitised or truncated names are equal still get distinct names (the hash)."""
    builder = SpecBuilder(SERVICE, template(name=name_template))
    names = [builder.build(ObjectRef("bkt", key)).name for key in keys]
    assert len(set(names)) == len(names), names


def test_same_key_in_two_buckets_gets_two_names() -> None:
    """The hash covers the bucket too."""
    builder = SpecBuilder(SERVICE, template())
    assert builder.build(ObjectRef("bkt-a", "a.mp4")).name != (
        builder.build(ObjectRef("bkt-b", "a.mp4")).name
    )


@pytest.mark.parametrize(
    ("key", "name_template"),
    [
        ("s" * 300 + ".mp4", "{stem}-{hash}"),
        ("s" * 300 + ".mp4", "{stem}"),
        ("s" * 300 + ".mp4", "{hash}-{stem}"),
        ("f" * 150 + "/" + "s" * 150 + ".mp4", "{folder}-{stem}-{hash}"),
        ("a.mp4", "x" * 150 + "-{stem}-{hash}"),
        ("a.mp4", "{hash}" + "x" * 150),
    ],
)
def test_hash_survives_truncation(key: str, name_template: str) -> None:
    """Long names are cut to exactly 100 characters and the full hash is still in them."""
    ref = ObjectRef("bkt", key)
    spec = build(ref, name=name_template)
    assert len(spec.name) == NAME_MAX
    assert source_hash(ref.url) in spec.name


def test_truncation_cuts_the_longest_part_first() -> None:
    """With two long parts, the longest one is cut, so both keep some of their text."""
    ref = ObjectRef("bkt", "f" * 60 + "/" + "s" * 200 + ".mp4")
    name = build(ref, name="{folder}-{stem}-{hash}").name
    folder, stem, digest = name.split("-")
    assert digest == source_hash(ref.url)
    assert folder.startswith("f")
    assert stem.startswith("s")
    assert len(name) == NAME_MAX


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        (
            "videos/a.mp4",
            {
                "stem": "a",
                "filename": "a.mp4",
                "ext": "mp4",
                "folder": "videos",
                "key": "videos/a.mp4",
            },
        ),
        (
            "a.b.mov",
            {"stem": "a.b", "filename": "a.b.mov", "ext": "mov", "folder": "", "key": "a.b.mov"},
        ),
        ("x/y/noext", {"stem": "noext", "filename": "noext", "ext": "", "folder": "x/y"}),
        ("x/.hidden", {"stem": ".hidden", "filename": ".hidden", "ext": ""}),
        ("x/", {"stem": "", "filename": "", "ext": "", "folder": "x"}),
        ("a/b c/视频.MP4", {"stem": "视频", "ext": "MP4", "folder": "a/b c"}),
    ],
)
def test_template_fields(key: str, expected: dict[str, str]) -> None:
    """The placeholders split the key as documented; bucket, hash and source are always there."""
    ref = ObjectRef("my-bucket", key)
    fields = template_fields(ref)
    for name, value in expected.items():
        assert fields[name] == value, name
    assert fields["bucket"] == "my-bucket"
    assert fields["hash"] == source_hash(ref.url)
    assert fields["source"] == ref.url
    assert set(fields) == NAME_FIELDS | {"source"}


@pytest.mark.parametrize(
    ("name_template", "expected"),
    [
        ("{stem}", "clip_1-{hash}"),
        ("{stem}-{hash}", "clip_1-{hash}"),
        ("{hash}_{stem}", "{hash}_clip_1"),
        ("{filename}", "clip_1_mp4-{hash}"),
        ("{ext}", "mp4-{hash}"),
        ("{folder}", "cams_north-{hash}"),
        ("{bucket}", "my-bucket-{hash}"),
        ("{key}", "cams_north_clip_1_mp4-{hash}"),
        ("job-{hash}", "job-{hash}"),
        ("fixed", "fixed-{hash}"),
        ("{bucket}.{stem}", "my-bucket_clip_1-{hash}"),
    ],
)
def test_name_templates(name_template: str, expected: str) -> None:
    """Each placeholder renders sanitised; '-{hash}' is appended when the template lacks {hash}."""
    ref = ObjectRef("my-bucket", "cams/north/clip 1.mp4")
    name = build(ref, name=name_template).name
    assert name == expected.replace("{hash}", source_hash(ref.url))


def test_body_matches_the_seed_document() -> None:
    """The create body has exactly the seed document's fields and shape."""
    ref = ObjectRef("obs-iva", "input/demo.mp4")
    spec = build(ref, description="description")
    seed = {
        "name": spec.name,
        "description": "description",
        "input": {"type": "obs", "data": [{"bucket": "obs-iva", "path": "input/demo.mp4"}]},
        "output": {"obs": {"bucket": "out-bucket", "path": "results/"}},
        "service_version": "1.0",
    }
    assert body_of(spec) == seed
    assert spec.source == "obs://obs-iva/input/demo.mp4"


def test_body_without_description_has_none() -> None:
    """No description template means no description field (not an empty one)."""
    assert "description" not in body_of(build(ObjectRef("bkt", "a.mp4")))


def test_body_keys_are_exact_without_extras() -> None:
    """Without [job.body], only the required fields are sent."""
    assert set(body_of(build(ObjectRef("bkt", "a.mp4")))) == {
        "name",
        "service_version",
        "input",
        "output",
    }


def test_input_path_is_the_key_exactly() -> None:
    """The input path is the object key unchanged, whatever the name sanitising did."""
    key = "视频/a b?c&d%20.mp4"
    body = body_of(build(ObjectRef("bkt", key)))
    assert body["input"] == {"type": "obs", "data": [{"bucket": "bkt", "path": key}]}


@pytest.mark.parametrize(
    ("description", "expected"),
    [
        ("{source}", "obs://bkt/cams/clip.mp4"),
        ("Video {filename} in {folder} of {bucket}", "Video clip.mp4 in cams of bkt"),
        ("{{literal}} {stem}.{ext}", "{literal} clip.mp4"),
        ("hash {hash}", "hash " + source_hash("obs://bkt/cams/clip.mp4")),
    ],
)
def test_description_template(description: str, expected: str) -> None:
    """The description template renders its placeholders, unsanitised."""
    assert (
        body_of(build(ObjectRef("bkt", "cams/clip.mp4"), description=description))["description"]
        == expected
    )


@pytest.mark.parametrize(
    "description",
    ["{source}", "x" * 499 + "{key}", "{key}{key}{key}", "x" * DESCRIPTION_MAX],
)
def test_description_is_cut_to_500(description: str) -> None:
    """A rendered description never exceeds VAS's 500 characters."""
    spec = build(ObjectRef("bkt", "k" * 400 + ".mp4"), description=description)
    assert len(body_of(spec)["description"]) <= DESCRIPTION_MAX


def test_extra_body_fields_and_outputs_are_merged() -> None:
    """[job.body] fields are added and its output types sit beside the OBS output."""
    extra = {
        "service_config": {"common": {"threshold": 0.5, "labels": ["person"]}},
        "resource_order_id": "order-1",
        "output": {"webhook": {"url": "https://example.com/hook", "headers": {"X-T": "1"}}},
    }
    spec = build(ObjectRef("bkt", "a.mp4"), body=extra)
    body = body_of(spec)
    assert body["service_config"] == extra["service_config"]
    assert body["resource_order_id"] == "order-1"
    assert body["output"] == {
        "obs": {"bucket": "out-bucket", "path": "results/"},
        "webhook": {"url": "https://example.com/hook", "headers": {"X-T": "1"}},
    }
    assert body["input"]["data"] == [{"bucket": "bkt", "path": "a.mp4"}]


def test_building_does_not_change_the_template() -> None:
    """The template's body is read, never changed, however many specs are built."""
    extra: dict[str, Any] = {"output": {"hosting": {}}, "service_config": {"common": {}}}
    job = template(body=extra)
    builder = SpecBuilder(SERVICE, job)
    for key in ["a.mp4", "b.mp4"]:
        builder.build(ObjectRef("bkt", key))
    assert extra == {"output": {"hosting": {}}, "service_config": {"common": {}}}
    assert dict(job.body) == extra


def test_specs_do_not_share_mutable_state() -> None:
    """Two specs from one builder carry their own input and name."""
    builder = SpecBuilder(SERVICE, template())
    first = body_of(builder.build(ObjectRef("bkt", "a.mp4")))
    second = body_of(builder.build(ObjectRef("bkt", "b.mp4")))
    assert first["input"]["data"][0]["path"] == "a.mp4"
    assert second["input"]["data"][0]["path"] == "b.mp4"
    assert first["name"] != second["name"]


def test_body_is_compact_utf8_json() -> None:
    """The body is UTF-8 JSON bytes (what is signed is what is sent)."""
    spec = build(ObjectRef("bkt", "视频.mp4"))
    assert isinstance(spec.body, bytes)
    assert "视频".encode() in spec.body


@pytest.mark.parametrize("field", sorted(NAME_FIELDS))
def test_every_manifest_name_field_builds(tmp_path: Path, field: str) -> None:
    """Each placeholder the manifest accepts in job.name is one the builder can render."""
    path = tmp_path / "m.toml"
    path.write_text(
        '[service]\nname = "svc"\nversion = "2.0"\nregion = "cn-north-4"\n\n'
        f'[job]\noutput = "obs://out-bucket/r/"\nname = "x-{{{field}}}"\n'
        'description = "{source}"\n\n'
        '[[source]]\npaths = ["obs://bkt/a/b.mp4"]\n'
    )
    manifest = load_manifest(path)
    spec = SpecBuilder(manifest.service, manifest.job).build(ObjectRef("bkt", "a/b.mp4"))
    assert VALID_NAME.fullmatch(spec.name)
    assert spec.name.startswith("x-")
    assert body_of(spec)["service_version"] == "2.0"


def test_source_hash_is_base32_of_sha256() -> None:
    """The name hash is, and stays, the first 12 base32 characters of the path's SHA-256:
    changing it would orphan every job an earlier run created (lookups go by name)."""
    import base64
    import hashlib
    import random

    rng = random.Random(5)
    for _ in range(2000):
        url = "obs://bkt/" + "".join(
            chr(rng.randint(32, 0x3000)) for _ in range(rng.randint(1, 40))
        )
        digest = hashlib.sha256(url.encode()).digest()
        assert source_hash(url) == base64.b32encode(digest[:8]).decode().lower()[:12]
    assert source_hash("obs://in-bucket/extra/late-arrival.mp4") == "5maqk2zudkfz"


@pytest.mark.parametrize(
    ("description", "body"),
    [
        (None, {}),
        ("from {source} ({ext})", {}),
        ('说明 "quoted" {stem}', {"priority": 3, "config": {"threshold": 0.5, "tags": ["a"]}}),
        (None, {"output": {"dis": {"stream_name": "s"}}, "resource_order": {"cpu": 1}}),
    ],
)
@pytest.mark.parametrize(
    "key", ["a.mp4", 'dir with spaces/视频 "01".mov', "back\\slash/x.MP4", "deep/a/b/c.ts"]
)
def test_body_bytes_are_orjson_of_the_body_dict(
    description: str | None, body: dict[str, Any], key: str
) -> None:
    """The body is spliced from pre-serialised parts; it must be byte for byte what
    orjson.dumps writes for the create body as a dict, in the seed document's field order."""
    ref = ObjectRef("in-bucket", key)
    job = template(description=description, body=body)
    spec = SpecBuilder(SERVICE, job).build(ref)
    fields = template_fields(ref)
    extra = dict(body)
    expected: dict[str, Any] = {"name": spec.name, "service_version": SERVICE.version}
    if description is not None:
        expected["description"] = description.format_map(fields)[:DESCRIPTION_MAX]
    expected["input"] = {"type": "obs", "data": [{"bucket": "in-bucket", "path": key}]}
    expected["output"] = {
        "obs": {"bucket": "out-bucket", "path": "results/"},
        **extra.pop("output", {}),
    }
    expected.update(extra)
    assert spec.body == orjson.dumps(expected)


# -- names: a property over every template ------------------------------------------------------

_PIECES = st.one_of(
    st.sampled_from(sorted("{" + f + "}" for f in NAME_FIELDS)),
    st.text(alphabet=st.characters(blacklist_characters="{}"), max_size=3),
    st.sampled_from(["-", "_", ".", " ", "视", "long-literal-text-" * 3]),
)
# Templates of many short parts: the case where the hash is the longest part of a name.
_TEMPLATES = st.one_of(st.lists(_PIECES, max_size=10), st.lists(_PIECES, min_size=30, max_size=120))
_KEYS = st.text(min_size=1, max_size=300).filter(lambda k: not k.endswith("/"))


@settings(max_examples=200, deadline=None)
@given(pieces=_TEMPLATES, key=_KEYS)
def test_every_name_is_valid_for_vas_and_keeps_the_whole_hash(pieces: list[str], key: str) -> None:
    """For any template (many short parts included) and any key: the name is 1 to 100 of
    VAS's characters and contains the source's full hash, which finds the job again."""
    spec = SpecBuilder(SERVICE, template(name="".join(pieces))).build(ObjectRef("bkt", key))
    assert VALID_NAME.fullmatch(spec.name), spec.name
    assert source_hash(spec.source) in spec.name


def test_many_short_parts_never_cut_the_hash() -> None:
    """The mutation a review found uncaught: 40 three-letter parts and a hash; the hash is the
    longest part, and the cut must take the short parts, never the hash."""
    name = "-".join(["{ext}"] * 40 + ["{hash}"])
    ref = ObjectRef("bkt", "cams/a.mp4")
    spec = SpecBuilder(SERVICE, template(name=name)).build(ref)
    assert len(spec.name) == NAME_MAX
    assert spec.name.endswith("-" + source_hash(ref.url))
