"""Countries for the map: ISO codes, names, centres and outlines, all from installed packages.

Outlines and centres come from the `countryinfo` package (1.0.1; MIT licence, (c) 2018 Porimol
Chandro), a declared dependency: each country's JSON holds its ISO codes, a `latlng` centre and
a `geoJSON` outline (from johan's world.geo.json, Natural Earth 1:110m, public domain). Nothing
of it is copied into this repository: `world_topology()` converts the installed outlines, once
per process, into the TopoJSON layout plotly.js's `geo` subplots read (see `topology` below).
Countries countryinfo gives no outline (Hungary, Serbia, Montenegro, Myanmar, most small
islands; Andorra and Palestine get a mere box) are drawn by their marker only. The gaps they
leave between their neighbours are filled as land where they are closed or nearly so (the
Balkans, the West Bank); Myanmar's opens too widely onto the sea and shows as a bay. A
country's centre is countryinfo's `latlng`, else the mean position of its airports in the
`airportsdata` package (Kosovo).
"""

from __future__ import annotations

import functools
import itertools
import json
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from importlib.metadata import version
from typing import Any

import airportsdata
import countryinfo
import numpy as np
import pycountry

WORLD_TOPOJSON_NAME = "world_110m"  # the name plotly.js looks up for scope 'world', 110m
MAP_SOURCE = (f"country outlines of countryinfo {version('countryinfo')} (MIT; from "
              "world.geo.json, Natural Earth 1:110m), converted to TopoJSON at run time")
# Codes in use that ISO 3166-1 does not assign (user-assigned or reserved).
EXTRA_COUNTRIES = {"XK": ("XKX", "Kosovo"), "EU": ("", "European Union"),
                   "AP": ("", "Asia/Pacific region")}

COORDINATE_DECIMALS = 2  # 0.01 degree, about 1 km: finer than a pixel of the report's map
GRID = 10.0**-COORDINATE_DECIMALS  # arcs are stored as steps on this grid (TopoJSON transform)
GRID_ORIGIN = (-180.0, -90.0)
MIN_RING_AREA = 0.005  # square degrees (~60 km^2); smaller islands are left out
KM_PER_DEGREE = 111.32  # of latitude
# A gap between outlines is filled as land when it is a hole, or a bay whose mouth is at most
# this wide (degrees; Montenegro's coast), found within this radius of a missing country's
# centre, and of about the missing countries' area inside it (within these ratios).
MAX_BAY_MOUTH = 2.0
BAY_SEARCH_RADIUS = 10.0
GAP_AREA_RATIO = (0.5, 1.5)
# The whole sphere but a speck at the South Pole, below the map's latitude range: wound so
# that d3-geo takes the ring's inside to be everything around the speck.
OCEAN_RING = ((0.0, -89.9), (-120.0, -89.9), (120.0, -89.9), (0.0, -89.9))
# Layers plotly.js reads from the topology when their show* option is on; it throws when one
# it needs is missing, so the ones with nothing to draw are empty collections.
EMPTY_LAYERS = ("lakes", "rivers", "subunits")

Point = tuple[float, float]  # (longitude, latitude)
Ring = tuple[Point, ...]  # closed: last point == first
Polygon = tuple[Ring, ...]  # exterior clockwise (as d3-geo wants), then holes anticlockwise
Edge = tuple[Point, Point]


@dataclass(frozen=True, slots=True)
class Country:
    alpha2: str
    alpha3: str  # '' when the code has no ISO alpha-3 (EU, AP)
    name: str
    lon: float  # label position; NaN when unknown
    lat: float

    @property
    def has_position(self) -> bool:
        return math.isfinite(self.lon) and math.isfinite(self.lat)


# ---------------------------------------------------------------------- countryinfo records


@dataclass(frozen=True, slots=True)
class Outline:
    """One country as countryinfo gives it: its centre and its cleaned polygons."""

    alpha3: str
    centre: Point | None
    polygons: tuple[Polygon, ...]
    area_km2: float  # as countryinfo states it; 0 when it does not
    has_neighbours: bool  # countryinfo lists land borders


@functools.cache
def outlines() -> dict[str, Outline]:
    """countryinfo's countries by ISO alpha-3 (the first record with an outline wins)."""
    found: dict[str, Outline] = {}
    for record in countryinfo.CountryInfo.all().values():
        alpha3 = str((record.get("ISO") or {}).get("alpha3") or "").upper()
        if alpha3:
            found[alpha3] = _merged(found.get(alpha3), _outline(alpha3, record))
    return found


def _outline(alpha3: str, record: Mapping[str, Any]) -> Outline:
    latlng: Sequence[float] = record.get("latlng") or ()
    centre = (float(latlng[1]), float(latlng[0])) if len(latlng) == 2 else None
    polygons = tuple(clean_polygons(geojson_polygons(record.get("geoJSON"))))
    return Outline(alpha3, centre, polygons, float(record.get("area") or 0),
                   bool(record.get("borders")))


def _merged(old: Outline | None, new: Outline) -> Outline:
    if old is None:
        return new
    return Outline(old.alpha3, old.centre or new.centre, old.polygons or new.polygons,
                   old.area_km2 or new.area_km2, old.has_neighbours or new.has_neighbours)


def geojson_polygons(geojson: object) -> list[list[list[Sequence[float]]]]:
    """The polygons (rings of [lon, lat]) of a GeoJSON FeatureCollection's features."""
    features = geojson.get("features") if isinstance(geojson, dict) else None
    polygons: list[list[list[Sequence[float]]]] = []
    for feature in features or ():
        geometry = feature.get("geometry") or {}
        if geometry.get("type") == "Polygon":
            polygons.append(geometry["coordinates"])
        elif geometry.get("type") == "MultiPolygon":
            polygons.extend(geometry["coordinates"])
    return polygons


# ---------------------------------------------------------------------- rings and polygons


def ring_area(ring: Sequence[Point]) -> float:
    """Signed planar area in square degrees: positive when anticlockwise."""
    return sum(x1 * y2 - x2 * y1 for (x1, y1), (x2, y2) in itertools.pairwise(ring)) / 2


def contains(ring: Sequence[Point], point: Point) -> bool:
    """Whether a point lies inside a closed ring (even-odd ray casting, planar)."""
    x, y = point
    inside = False
    for (x1, y1), (x2, y2) in itertools.pairwise(ring):
        if (y1 > y) != (y2 > y) and x < x1 + (y - y1) * (x2 - x1) / (y2 - y1):
            inside = not inside
    return inside


def clean_ring(raw: Iterable[Sequence[float]]) -> Ring | None:
    """Rounded, without repeated points, closed; None when too small or a mere box."""
    rounded = [(round(float(p[0]), COORDINATE_DECIMALS), round(float(p[1]),
                                                              COORDINATE_DECIMALS))
               for p in raw]
    points = [p for i, p in enumerate(rounded) if i == 0 or p != rounded[i - 1]]
    if points and points[0] != points[-1]:
        points.append(points[0])
    if len(points) < 4 or abs(ring_area(points)) < MIN_RING_AREA or is_box(points):
        return None
    return tuple(points)


def is_box(ring: Sequence[Point]) -> bool:
    """A latitude-longitude rectangle: countryinfo's stand-in for a few outlines (Andorra,
    Palestine), drawn as a marker rather than as a box."""
    return len(ring) == 5 and len({p[0] for p in ring}) == 2 and len({p[1] for p in ring}) == 2


def oriented(ring: Ring, clockwise: bool) -> Ring:
    return ring if (ring_area(ring) < 0) == clockwise else ring[::-1]


def clean_polygons(raw_polygons: Iterable[list[list[Sequence[float]]]]) -> Iterator[Polygon]:
    """Polygons wound as d3-geo wants them. A later ring outside the first is an island (some
    records list islands as holes), not a hole."""
    for raw in raw_polygons:
        first = clean_ring(raw[0]) if raw else None
        if first is None:
            continue
        exterior = oriented(first, clockwise=True)
        others = [ring for ring in map(clean_ring, raw[1:]) if ring]
        yield (exterior, *(oriented(r, clockwise=False) for r in others
                           if contains(exterior, r[0])))
        yield from ((oriented(r, clockwise=True),) for r in others
                    if not contains(exterior, r[0]))


# ---------------------------------------------------------------------- topology


def edge_key(a: Point, b: Point) -> Edge:
    return (a, b) if a <= b else (b, a)


def ring_edges(ring: Ring) -> list[Edge]:
    return list(itertools.pairwise(ring))


@dataclass(slots=True)
class ArcTable:
    """TopoJSON arcs, each stored once: a run met again backwards is referred to as ~index."""

    arcs: list[list[Point]] = field(default_factory=list)
    index: dict[tuple[Point, ...], int] = field(default_factory=dict)

    def ref(self, run: Sequence[Point]) -> int:
        key = tuple(run)
        if key in self.index:
            return self.index[key]
        if key[::-1] in self.index:
            return ~self.index[key[::-1]]
        self.index[key] = len(self.arcs)
        self.arcs.append(list(key))
        return self.index[key]


def runs(ring: Ring, labels: Sequence[object]) -> list[tuple[object, list[Point]]]:
    """The ring cut where its edges' labels (labels[i] for edge i) change: (label, points)."""
    count = len(labels)
    starts = [i for i in range(count) if labels[i] != labels[i - 1]]
    if not starts:
        return [(labels[0], list(ring))]
    pieces = []
    for start, end in zip(starts, starts[1:] + starts[:1], strict=True):
        length = (end - start) % count or count
        pieces.append((labels[start], [ring[(start + j) % count] for j in range(length + 1)]))
    return pieces


def chains(edges: Iterable[Edge]) -> list[Ring]:
    """Directed edges joined end to start into closed rings (where they close)."""
    following: dict[Point, list[Point]] = {}
    for a, b in edges:
        following.setdefault(a, []).append(b)
    found = []
    for start in list(following):
        while following.get(start):
            ring = [start]
            while following.get(ring[-1]) and (len(ring) == 1 or ring[-1] != start):
                ring.append(following[ring[-1]].pop())
            if ring[-1] == start:
                found.append(tuple(ring))
    return found


def distance(a: Point, b: Point) -> float:
    return math.hypot(a[0] - b[0], a[1] - b[1])


def area_km2(ring: Ring) -> float:
    mean_lat = sum(p[1] for p in ring) / len(ring)
    return abs(ring_area(ring)) * KM_PER_DEGREE**2 * math.cos(math.radians(mean_lat))


@dataclass(frozen=True, slots=True)
class Gap:
    """Land between outlines, left by countries countryinfo has no outline for."""

    ring: Ring  # anticlockwise, along the neighbours' borders
    mouth: Edge | None  # the chord that closes it off from the sea, drawn as coast


def enclosing_gap(chain: Ring, centre: Point) -> Gap | None:
    """The hole, or the narrowest-mouthed bay, of a coast chain around a centre."""
    if ring_area(chain) > 0 and contains(chain, centre):
        return Gap(chain, None)
    start = _farthest(chain[:-1], centre)
    points = chain[start:-1] + chain[: start + 1]  # the same ring, from far from the centre
    for width, i, j in _mouths(points, centre):
        bay = (*points[i: j + 1], points[i])
        if ring_area(bay) > 0 and contains(bay, centre):
            return Gap(bay, (points[j], points[i]) if width else None)
    return None


# numpy picks candidates with this relative slack on squared distances; `distance` decides, so
# the answers are those of comparing every `distance` (rounding is far below the slack)
SLACK = 1e-9


def _farthest(points: Sequence[Point], centre: Point) -> int:
    """The first of the points farthest from the centre."""
    square = ((np.asarray(points) - centre) ** 2).sum(axis=1)
    candidates = np.flatnonzero(square >= square.max() * (1 - SLACK)).tolist()
    return max(candidates, key=lambda k: distance(points[k], centre))


def _mouths(points: Sequence[Point], centre: Point) -> list[tuple[float, int, int]]:
    """The chords (width, i, j), j > i + 1, at most MAX_BAY_MOUTH wide between points within
    BAY_SEARCH_RADIUS of the centre, narrowest first."""
    xy = np.asarray(points)
    square = ((xy - centre) ** 2).sum(axis=1)
    near = [k for k in np.flatnonzero(square <= BAY_SEARCH_RADIUS**2 * (1 + SLACK)).tolist()
            if distance(points[k], centre) <= BAY_SEARCH_RADIUS]
    at = np.array(near, np.int64)
    gaps = ((xy[at, None, :] - xy[None, at, :]) ** 2).sum(axis=2)
    pairs = (gaps <= MAX_BAY_MOUTH**2 * (1 + SLACK)) & (at[None, :] > at[:, None] + 1)
    rows, cols = pairs.nonzero()
    chords = ((distance(points[i], points[j]), i, j)
              for i, j in zip(at[rows].tolist(), at[cols].tolist(), strict=True))
    return sorted(c for c in chords if c[0] <= MAX_BAY_MOUTH)


def _box(ring: Ring, margin: float) -> tuple[float, float, float, float]:
    """The ring's bounding box grown by `margin` on every side."""
    xs, ys = [p[0] for p in ring], [p[1] for p in ring]
    return min(xs) - margin, min(ys) - margin, max(xs) + margin, max(ys) + margin


def _inside(point: Point, box: tuple[float, float, float, float]) -> bool:
    return box[0] <= point[0] <= box[2] and box[1] <= point[1] <= box[3]


@dataclass(frozen=True, slots=True)
class Missing:
    """A country with land borders but no outline: it may leave a gap between its neighbours."""

    centre: Point
    area_km2: float


@dataclass(slots=True)
class TopologyBuilder:
    """Countries' polygons in, the TopoJSON dict plotly.js reads out (see `topology`)."""

    countries: dict[str, Outline]
    missing: list[Missing]
    owners: dict[Edge, set[int]] = field(default_factory=dict)
    rings: list[Ring] = field(default_factory=list)
    arcs: ArcTable = field(default_factory=ArcTable)
    gap_edges: set[Edge] = field(default_factory=set)
    coast: dict[int, None] = field(default_factory=dict)  # arc indices, in order met
    cursor: int = 0  # the number of the next ring `_ring_arcs` converts

    def build(self) -> dict[str, Any]:
        for outline in self.countries.values():
            for ring in (r for polygon in outline.polygons for r in polygon):
                self._add_ring(ring)
        gaps = self.land_gaps()
        self.gap_edges = {edge_key(*e) for gap in gaps for e in ring_edges(gap.ring)}
        countries = [self._country(outline) for outline in self.countries.values()]
        land = [polygon for c in countries
                for polygon in (c["arcs"] if c["type"] == "MultiPolygon" else [c["arcs"]])]
        land += [[[self.arcs.ref(oriented(gap.ring, clockwise=True))]] for gap in gaps]
        for mouth in (gap.mouth for gap in gaps if gap.mouth):
            self._add_coast(self.arcs.ref(mouth))
        ocean = [self.arcs.ref(OCEAN_RING)]
        return topology(self.arcs.arcs, countries, land, list(self.coast), ocean)

    def _add_ring(self, ring: Ring) -> None:
        for edge in ring_edges(ring):
            self.owners.setdefault(edge_key(*edge), set()).add(len(self.rings))
        self.rings.append(ring)

    def land_gaps(self) -> list[Gap]:
        """Holes or narrow bays in the union of all outlines whose area the outline-less
        countries with centres inside them can account for (Hungary, Serbia, Montenegro)."""
        unshared = [e for ring in self.rings for e in ring_edges(ring)
                    if len(self.owners[edge_key(*e)]) == 1]
        coasts = chains(unshared)
        boxes = [_box(chain, BAY_SEARCH_RADIUS + 1) for chain in coasts]  # (+1: preselects)
        found: dict[frozenset[Point], Gap] = {}
        for missing in self.missing:
            near = (c for c, box in zip(coasts, boxes, strict=True) if _inside(missing.centre, box))
            for gap in filter(None, (enclosing_gap(c, missing.centre) for c in near)):
                if self._explained(gap.ring):
                    found.setdefault(frozenset(gap.ring), gap)
        return list(found.values())

    def _explained(self, ring: Ring) -> bool:
        inside = sum(m.area_km2 for m in self.missing if contains(ring, m.centre))
        low, high = GAP_AREA_RATIO
        return low * inside <= area_km2(ring) <= high * inside

    def _country(self, outline: Outline) -> dict[str, Any]:
        polygons = [[self._ring_arcs(ring) for ring in polygon] for polygon in outline.polygons]
        single = len(polygons) == 1
        return {"type": "Polygon" if single else "MultiPolygon", "id": outline.alpha3,
                "properties": {"ct": list(outline.centre or label_point(outline))},
                "arcs": polygons[0] if single else polygons}

    def _ring_arcs(self, ring: Ring) -> list[int]:
        """The ring as arc references, cut where its neighbour changes; coast arcs noted."""
        labels = [self._neighbour(self.cursor, edge) for edge in ring_edges(ring)]
        self.cursor += 1
        refs = []
        for label, points in runs(ring, labels):
            refs.append(self.arcs.ref(points))
            if label == "coast":
                self._add_coast(refs[-1])
        return refs

    def _add_coast(self, ref: int) -> None:
        self.coast[ref if ref >= 0 else ~ref] = None

    def _neighbour(self, number: int, edge: Edge) -> object:
        key = edge_key(*edge)
        others = frozenset(self.owners[key] - {number})
        if others:
            return others
        return "gap" if key in self.gap_edges else "coast"


def label_point(outline: Outline) -> Point:
    """The centre of the bounding box of a country's largest ring."""
    ring = max((polygon[0] for polygon in outline.polygons), key=lambda r: -ring_area(r))
    xs, ys = [p[0] for p in ring], [p[1] for p in ring]
    return ((min(xs) + max(xs)) / 2, (min(ys) + max(ys)) / 2)


def delta_encoded(arc: Sequence[Point]) -> list[list[int]]:
    """An arc as quantized TopoJSON stores it: grid steps from the previous point."""
    cells = [(round((x - GRID_ORIGIN[0]) / GRID), round((y - GRID_ORIGIN[1]) / GRID))
             for x, y in arc]
    return [[x - px, y - py] for (px, py), (x, y) in itertools.pairwise([(0, 0), *cells])]


def topology(arcs: list[list[Point]], countries: list[dict[str, Any]],
             land: list[Any], coast: list[int], ocean: list[int]) -> dict[str, Any]:
    """The TopoJSON plotly.js reads: quantized arcs (each border once), one object per layer:
    countries (ISO alpha-3 ids, a hover point `ct` as [lon, lat]), land, coastlines, ocean."""
    objects = {
        "countries": collection(countries),
        "land": collection([{"type": "MultiPolygon", "arcs": land}]),
        "coastlines": collection([{"type": "MultiLineString", "arcs": [[a] for a in coast]}]),
        "ocean": collection([{"type": "Polygon", "arcs": [ocean]}]),
        **{name: collection([]) for name in EMPTY_LAYERS},
    }
    return {"type": "Topology", "objects": objects, "arcs": [delta_encoded(a) for a in arcs],
            "transform": {"scale": [GRID, GRID], "translate": list(GRID_ORIGIN)}}


def collection(geometries: list[dict[str, Any]]) -> dict[str, Any]:
    return {"type": "GeometryCollection", "geometries": geometries}


@functools.cache
def world_topology() -> dict[str, Any]:
    """The world map plotly.js's geo subplots draw, built from countryinfo's outlines."""
    drawn = {code: o for code, o in sorted(outlines().items()) if o.polygons}
    missing = [Missing(o.centre, o.area_km2) for o in outlines().values()
               if not o.polygons and o.centre and o.has_neighbours]
    return TopologyBuilder(drawn, missing).build()


@functools.cache
def world_topology_text() -> str:
    """The TopoJSON world map as compact JSON text, ready to embed."""
    return json.dumps(world_topology(), separators=(",", ":"))


def has_shape(alpha3: str) -> bool:
    """Whether the map has an outline for this country (others get a marker only)."""
    return bool(alpha3) and alpha3 in outlines() and bool(outlines()[alpha3].polygons)


# ---------------------------------------------------------------------- countries


@functools.cache
def _airport_centres() -> dict[str, tuple[float, float]]:
    sums: dict[str, list[float]] = {}
    for airport in airportsdata.load("IATA").values():
        entry = sums.setdefault(str(airport["country"]), [0.0, 0.0, 0.0])
        entry[0] += float(airport["lon"])
        entry[1] += float(airport["lat"])
        entry[2] += 1
    return {code: (lon / n, lat / n) for code, (lon, lat, n) in sums.items()}


def _centre(alpha2: str, alpha3: str) -> Point:
    known = outlines().get(alpha3)
    if known is not None and known.centre is not None:
        return known.centre
    return _airport_centres().get(alpha2) or (math.nan, math.nan)


@functools.cache
def country(code: str) -> Country | None:
    """The country for an ISO 3166-1 alpha-2 or alpha-3 code (or a name); None if unknown."""
    text = str(code or "").strip()
    if not text or text.lower() in ("nan", "none", "-", "--", "zz"):
        return None
    alpha2, alpha3, name = _identify(text)
    if not alpha2 and not alpha3:
        return None
    lon, lat = _centre(alpha2, alpha3)
    return Country(alpha2, alpha3, name, lon, lat)


def _identify(text: str) -> tuple[str, str, str]:
    extra = EXTRA_COUNTRIES.get(text.upper())
    if extra:
        return text.upper(), extra[0], extra[1]
    record: Any = None
    try:
        record = pycountry.countries.lookup(text)
    except LookupError:
        return "", "", text
    name = getattr(record, "common_name", None) or record.name
    return str(record.alpha_2), str(record.alpha_3), str(name)


def country_name(code: str) -> str:
    found = country(code)
    return found.name if found else str(code or "")
