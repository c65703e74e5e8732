"""VAS's formats in one place: what the manifest, the CLI and the emulator agree a VAS name,
id or region looks like. Pure: no I/O."""

from __future__ import annotations

__all__ = ["REGIONS"]

# The regions huaweicloudsdkvas knows (VasRegion, 3.1.219); an endpoint outside them still
# works, but a region name outside them is most likely a typo.
REGIONS = (
    "cn-north-1",
    "cn-north-4",
    "cn-east-2",
    "cn-east-3",
    "cn-south-1",
    "ap-southeast-1",
    "ap-southeast-2",
    "ap-southeast-3",
)
