"""Annotations: ASAP XML and QuPath GeoJSON polygons, PNG masks, one interface, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpkit.errors import HelpkitError
from helpkit.slide.annotation import (
    MaskAnnotation,
    PolygonAnnotation,
    annotation_regions,
    read_annotation,
)
from helpkit.slide.polygons import Polygon, fill_rings, trace_mask, write_asap_xml, write_geojson

DIMS = (1024, 768)  # level-0 (w, h), a multiple of 32 each way

# Two tumour regions and a hole, every edge on a multiple of 32 so the expected mask is exact
# at downsamples 1, 16 and 32.
SQUARE = [(64, 64), (320, 64), (320, 320), (64, 320)]
L_SHAPE = [(512, 128), (832, 128), (832, 256), (640, 256), (640, 512), (512, 512)]
HOLE = [(128, 128), (256, 128), (256, 256), (128, 256)]


def _level0(*rects_in: tuple[int, int, int, int], minus: tuple[tuple[int, int, int, int], ...] = ()) -> np.ndarray:
    mask = np.zeros(DIMS[::-1], dtype=bool)
    for x0, y0, x1, y1 in rects_in:
        mask[y0:y1, x0:x1] = True
    for x0, y0, x1, y1 in minus:
        mask[y0:y1, x0:x1] = False
    return mask


TUMOUR0 = _level0((64, 64, 320, 320), (512, 128, 832, 256), (512, 256, 640, 512), minus=((128, 128, 256, 256),))
HOLE0 = _level0((128, 128, 256, 256))


def _at(level0: np.ndarray, ds: int) -> np.ndarray:
    """The mask at ``ds``: each pixel takes the level-0 pixel at its centre."""
    return level0 if ds == 1 else level0[ds // 2::ds, ds // 2::ds]


def _asap(path: Path, annotations: list[tuple[str, list[tuple[float, float]]]], root: str = "ASAP_Annotations") -> Path:
    body = []
    for k, (group, points) in enumerate(annotations):
        coords = "".join(f'<Coordinate Order="{i}" X="{x}" Y="{y}" />' for i, (x, y) in enumerate(points))
        body.append(f'<Annotation Name="Annotation {k}" Type="Polygon" PartOfGroup="{group}" Color="#F4FA58">'
                    f"<Coordinates>{coords}</Coordinates></Annotation>")
    path.write_text(f'<?xml version="1.0"?><{root}><Annotations>{"".join(body)}</Annotations>'
                    f'<AnnotationGroups><Group Name="_0" PartOfGroup="None" Color="#F4FA58"><Attributes /></Group>'
                    f"</AnnotationGroups></{root}>")
    return path


@pytest.fixture
def asap_file(tmp_path: Path) -> Path:
    # The CAMELYON16 spellings: _0 and Tumor tumour, Exclusion a hole; coordinates in a
    # shuffled Order to check vertices are sorted.
    path = _asap(tmp_path / "tumor_001.xml", [("_0", SQUARE), ("Tumor", L_SHAPE), ("Exclusion", HOLE)])
    text = path.read_text().replace('Order="0" X="64" Y="64"', 'Order="9" X="64" Y="64"')  # last, same ring
    path.write_text(text)
    return path


@pytest.fixture
def geojson_file(tmp_path: Path) -> Path:
    def ring(points: list[tuple[int, int]]) -> list[list[int]]:
        return [list(p) for p in points] + [list(points[0])]

    features = [{
        "type": "Feature",
        "geometry": {"type": "MultiPolygon", "coordinates": [[ring(SQUARE), ring(HOLE)], [ring(L_SHAPE)]]},
        "properties": {"objectType": "annotation", "classification": {"name": "Tumor", "color": [200, 0, 0]}},
    }, {
        "type": "Feature", "geometry": {"type": "Point", "coordinates": [10, 10]},
        "properties": {"classification": {"name": "Tumor"}},
    }]
    path = tmp_path / "tumor_001.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    return path


@pytest.mark.parametrize("which", ["asap_file", "geojson_file"])
@pytest.mark.parametrize("ds", [1, 16, 32])
def test_polygons_rasterise_exactly_with_the_hole_left_out(which: str, ds: int, request: pytest.FixtureRequest) -> None:
    annotation = read_annotation(request.getfixturevalue(which), DIMS)
    assert isinstance(annotation, PolygonAnnotation)
    tumour, exclusion = annotation.tumour(ds), annotation.exclusion(ds)
    assert tumour.shape == (768 // ds, 1024 // ds)
    np.testing.assert_array_equal(tumour, _at(TUMOUR0, ds))
    np.testing.assert_array_equal(exclusion, _at(HOLE0, ds))
    assert not (tumour & exclusion).any()
    # a shape gives the same mask as its downsample
    np.testing.assert_array_equal(annotation.tumour(shape=tumour.shape), tumour)


def test_geojson_skips_points_and_regions_carry_the_hole(geojson_file: Path, asap_file: Path) -> None:
    assert read_annotation(geojson_file, DIMS).skipped == 1
    for path in (geojson_file, asap_file):
        regions = annotation_regions(path, DIMS)
        assert [len(r.holes) for r in regions] == [1, 0]
        assert regions[0].area == 256 * 256 - 128 * 128
        np.testing.assert_array_equal(regions[0].holes[0], np.array(HOLE, dtype=float))


def test_fill_matches_point_in_polygon_on_pixel_centres() -> None:
    from matplotlib.path import Path as MplPath

    rng = np.random.default_rng(3)
    angles = np.sort(rng.uniform(0, 2 * np.pi, 40))
    radii = rng.uniform(100, 300, 40)
    ring = np.column_stack([500 + radii * np.cos(angles), 400 + radii * np.sin(angles)])
    for ds in (1.0, 7.0, 16.0):
        shape = (int(np.ceil(800 / ds)), int(np.ceil(1000 / ds)))
        rows, cols = np.mgrid[: shape[0], : shape[1]]
        centres = np.column_stack([(cols.ravel() + 0.5) * ds, (rows.ravel() + 0.5) * ds])
        expected = MplPath(ring).contains_points(centres).reshape(shape)
        got = fill_rings([ring], shape, (ds, ds))
        assert (got != expected).sum() <= 2  # only centres within rounding of an edge may differ


def test_tiny_polygon_still_marks_its_pixel(tmp_path: Path) -> None:
    path = _asap(tmp_path / "itc.xml", [("_1", [(500, 500), (503, 500), (503, 503)])])
    mask = read_annotation(path, DIMS).tumour(32)
    assert mask.sum() == 1 and mask[500 // 32, 500 // 32]


def test_camelyon17_normal_is_cut_out_and_stays_normal(tmp_path: Path) -> None:
    path = _asap(tmp_path / "patient_004_node_4.xml", [("metastases", SQUARE), ("normal", HOLE)])
    annotation = read_annotation(path, DIMS)
    np.testing.assert_array_equal(annotation.tumour(16), _at(TUMOUR0 & _level0((0, 0, 400, 400)), 16))
    assert not annotation.exclusion(16).any()


def test_png_mask_implements_the_same_interface(tmp_path: Path) -> None:
    level16 = _at(TUMOUR0, 16)
    Image.fromarray(level16.astype(np.uint8) * 255).save(tmp_path / "m.png")
    annotation = read_annotation(tmp_path / "m.png", DIMS)
    assert isinstance(annotation, MaskAnnotation)
    np.testing.assert_array_equal(annotation.tumour(16), level16)
    np.testing.assert_array_equal(annotation.tumour(32), _at(TUMOUR0, 32))
    assert annotation.tumour(8).sum() == 4 * level16.sum()
    assert not annotation.exclusion(16).any()
    mask, exclusion = annotation.masks(None)
    assert exclusion is None and mask.downsample == (16.0, 16.0)
    # traced polygons give the mask back at its own downsample
    polygons = annotation.polygons()
    assert len(polygons) == 2 and sum(len(p.holes) for p in polygons) == 1
    np.testing.assert_array_equal(
        PolygonAnnotation(tmp_path / "m.png", DIMS, polygons).tumour(16) | _at(HOLE0, 16), level16 | _at(HOLE0, 16))


def test_trace_then_write_then_read_round_trips(tmp_path: Path) -> None:
    from scipy import ndimage

    rng = np.random.default_rng(0)
    mask = ndimage.gaussian_filter(rng.random((48, 64)), 3) > 0.52  # blobs, at downsample 16
    mask[5:20, 40:60], mask[9:14, 45:52], mask[11, 47] = True, False, True  # one with a hole and an island
    no_island = mask.copy()
    no_island[11, 47] = False
    # ASAP has no holes: a hole is an Exclusion polygon, which wins over an island inside it
    for name, writer, expected in (("t.xml", write_asap_xml, no_island), ("t.geojson", write_geojson, mask)):
        polygons = trace_mask(mask, 16)
        assert any(p.holes for p in polygons)
        writer(tmp_path / name, polygons)
        annotation = read_annotation(tmp_path / name, DIMS)
        np.testing.assert_array_equal(annotation.tumour(16), expected)
        # a hole cut out of a tumour is left out: neither tumour nor normal
        np.testing.assert_array_equal(annotation.exclusion(16), ndimage.binary_fill_holes(mask) & ~expected)


@pytest.mark.parametrize("case, message", [
    ("not_asap", "not an ASAP annotation file"),
    ("two_points", "has 2 points; a polygon needs at least 3"),
    ("outside", "outside the 1024x768 slide"),
    ("unknown_group", "group 'Lymphocytes' is not a known"),
    ("broken", "cannot parse annotation XML"),
    ("nan", "not a number"),
])
def test_bad_xml_is_one_line_naming_the_file(tmp_path: Path, case: str, message: str) -> None:
    path = tmp_path / f"{case}.xml"
    if case == "not_asap":
        _asap(path, [("_0", SQUARE)], root="Annotations")
    elif case == "two_points":
        _asap(path, [("_0", SQUARE), ("_0", [(1, 1), (5, 5)])])
    elif case == "outside":
        _asap(path, [("_0", [(10, 10), (2000, 10), (10, 50)])])
    elif case == "unknown_group":
        _asap(path, [("Lymphocytes", SQUARE)])
    elif case == "broken":
        path.write_text("<ASAP_Annotations><Annotations>")
    else:
        _asap(path, [("_0", [(1, 1), (5, "x"), (9, 9)])])
    with pytest.raises(HelpkitError) as info:
        read_annotation(path, DIMS)
    assert message in str(info.value) and "\n" not in str(info.value)
    assert info.value.path == path


def test_bad_geojson_and_suffix(tmp_path: Path) -> None:
    bad = tmp_path / "a.geojson"
    bad.write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [[[0, 0], [9, 0], [0, 0]]]},
         "properties": {"classification": {"name": "Tumor"}}}]}))
    with pytest.raises(HelpkitError, match="has 2 points"):
        read_annotation(bad, DIMS)
    bad.write_text("{not json")
    with pytest.raises(HelpkitError, match="cannot parse GeoJSON"):
        read_annotation(bad, DIMS)
    with pytest.raises(HelpkitError, match="unknown annotation format '.txt'"):
        read_annotation(tmp_path / "a.txt", DIMS)
    with pytest.raises(HelpkitError, match="annotation file not found"):
        read_annotation(tmp_path / "missing.xml", DIMS)


def test_polygon_area_and_bounds() -> None:
    polygon = Polygon(np.array(SQUARE, float), (np.array(HOLE, float),))
    assert polygon.area == 256 * 256 - 128 * 128
    assert polygon.bounds == (64, 64, 320, 320)


# --- the patch index: exclusion regions are neither tumour nor normal ---

BIG = (2048, 1536)  # 16 x 12 default patches of 128 level-0 pixels
BIG_SQUARE = [(128, 128), (896, 128), (896, 896), (128, 896)]  # cells rows/cols 1..6
BIG_HOLE = [(384, 384), (640, 384), (640, 640), (384, 640)]  # cells rows/cols 3..4
BIG_RECT = [(1152, 256), (1664, 256), (1664, 768), (1152, 768)]  # rows 2..5, cols 9..12


@pytest.fixture(scope="module")
def tissue_slide(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A slide that is tissue everywhere (one pink), 0.25 um/px."""
    from helpkit.synth.tiff import TILE, write_pyramid

    path = tmp_path_factory.mktemp("slide") / "tumor_001.tif"
    pink = np.broadcast_to(np.array([200, 120, 170], np.uint8), (TILE, TILE, 3)).copy()
    write_pyramid(path, *BIG, 0.25, render=lambda ds, x, y: pink, constant=lambda ds, x, y: "pink",
                  constants={"pink": pink}, workers=1)
    return path


@pytest.mark.parametrize("kind", ["xml", "geojson"])
def test_index_leaves_exclusion_out(tissue_slide: Path, tmp_path: Path, kind: str) -> None:
    from helpkit.slide.index import IndexConfig, index_slide

    if kind == "xml":
        path = _asap(tmp_path / "tumor_001.xml", [("_0", BIG_SQUARE), ("_1", BIG_RECT), ("_2", BIG_HOLE)])
    else:
        polygons = [Polygon(np.array(BIG_SQUARE, float), (np.array(BIG_HOLE, float),)),
                    Polygon(np.array(BIG_RECT, float))]
        path = write_geojson(tmp_path / "tumor_001.geojson", polygons)
        data = json.loads(path.read_text())  # one MultiPolygon feature, as QuPath writes merged regions
        data["features"] = [{**data["features"][0], "geometry": {"type": "MultiPolygon", "coordinates": [
            f["geometry"]["coordinates"] for f in data["features"]]}}]
        path.write_text(json.dumps(data))
    from helpkit.slide.geometry import PatchGeometry

    # 64 px at 0.5 um/px: 128-pixel cells of the 0.25 um/px test slide, which the polygons are drawn on
    result = index_slide(tissue_slide, path, 1, IndexConfig(geometry=PatchGeometry(mpp=0.5), balance=False))
    assert (result.n_tumour, result.n_normal, result.n_ambiguous) == (32 + 16, 192 - 36 - 16, 4)
    patches = result.patches
    cells = {(r, c): label for r, c, label in zip(patches["row"], patches["col"], patches["label"])}
    assert all((r, c) not in cells for r in (3, 4) for c in (3, 4))  # the hole: neither class
    assert cells[(1, 1)] == 1 and cells[(2, 9)] == 1 and cells[(0, 0)] == 0 and cells[(3, 7)] == 0
