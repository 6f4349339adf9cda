"""Real MaxMind-format databases for tests, written with mmdb-writer (no mocks)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from mmdb_writer import MMDBWriter
from netaddr import IPSet

BUILD_EPOCH = int(dt.datetime(2024, 5, 1, 12, tzinfo=dt.UTC).timestamp())


class DatedWriter(MMDBWriter):
    """mmdb-writer stamps build_epoch with the current time; tests need a fixed date."""

    def _build_meta(self) -> dict[str, Any]:
        return {**super()._build_meta(), "build_epoch": BUILD_EPOCH}


def write_mmdb(path: Path, database_type: str, networks: dict[str, dict[str, Any]]) -> Path:
    writer = DatedWriter(
        ip_version=6,
        ipv4_compatible=True,
        database_type=database_type,
        languages=["en"],
        description={"en": f"test {database_type}"},
    )
    for network, record in networks.items():
        writer.insert_network(IPSet([network]), record)
    writer.to_db_file(str(path))
    return path


def city_record(
    country: str, city: str, region: tuple[str, str], lat: float, lon: float, radius: int
) -> dict[str, Any]:
    """MaxMind GeoIP2/GeoLite2 City layout (dev.maxmind.com, 'GeoIP2 City and Country')."""
    return {
        "city": {"geoname_id": 1, "names": {"en": city}},
        "continent": {"code": "NA", "geoname_id": 6255149, "names": {"en": "North America"}},
        "country": {"geoname_id": 2, "iso_code": country, "names": {"en": country}},
        "location": {"accuracy_radius": radius, "latitude": lat, "longitude": lon},
        "registered_country": {"geoname_id": 2, "iso_code": country, "names": {"en": country}},
        "subdivisions": [{"geoname_id": 3, "iso_code": region[0], "names": {"en": region[1]}}],
    }


SAN_JOSE = city_record("US", "San Jose", ("CA", "California"), 37.3388, -121.8914, 20)
