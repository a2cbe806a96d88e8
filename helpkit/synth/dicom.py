"""Multi-file DICOM whole-slide images (VL Whole Slide Microscopy, one file per pyramid level).

What OpenSlide's DICOM reader needs and nothing more: per level a ``VOLUME`` image of
uncompressed RGB tiles (explicit VR little endian, ``TILED_FULL``), all levels sharing one
Series Instance UID, each its own SOP instance, and the level-0 pixel spacing (OpenSlide's
mpp). OpenSlide opens the slide from any one of the files when the others lie beside it.
Used to build DICOM test slides; written with pydicom.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

WSI_STORAGE = "1.2.840.10008.5.1.4.1.1.77.1.6"
"""SOP class UID of VL Whole Slide Microscopy Image Storage, the only one OpenSlide opens."""


def _tiles(image: np.ndarray, tile: int) -> bytes:
    """Row-major ``tile`` x ``tile`` frames of ``image``, the right and bottom edges padded white."""
    h, w, _ = image.shape
    rows, cols = -(-h // tile), -(-w // tile)
    padded = np.full((rows * tile, cols * tile, 3), 255, np.uint8)
    padded[:h, :w] = image
    frames = padded.reshape(rows, tile, cols, tile, 3).transpose(0, 2, 1, 3, 4)
    return np.ascontiguousarray(frames).tobytes()


def write_dicom_level(path: str | Path, image: np.ndarray, series_uid: str, study_uid: str, mpp: float,
                      tile: int = 256) -> Path:
    """One pyramid level, (h, w, 3) uint8 RGB ``image`` at ``mpp`` microns per pixel, as one file."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.sequence import Sequence
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    h, w, _ = image.shape
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = WSI_STORAGE
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = WSI_STORAGE
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.Modality = "SM"
    ds.ImageType = ["DERIVED", "PRIMARY", "VOLUME", "NONE"]
    ds.SamplesPerPixel = 3
    ds.PhotometricInterpretation = "RGB"
    ds.PlanarConfiguration = 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.Rows = ds.Columns = tile
    ds.NumberOfFrames = -(-h // tile) * -(-w // tile)
    ds.TotalPixelMatrixColumns, ds.TotalPixelMatrixRows, ds.TotalPixelMatrixFocalPlanes = w, h, 1
    ds.DimensionOrganizationType = "TILED_FULL"
    spacing = Dataset()
    spacing.PixelSpacing = [mpp / 1000, mpp / 1000]  # millimetres: row, column
    spacing.SliceThickness = 0.001
    shared = Dataset()
    shared.PixelMeasuresSequence = Sequence([spacing])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    ds.PixelData = _tiles(np.asarray(image, dtype=np.uint8), tile)
    path = Path(path)
    ds.save_as(path, enforce_file_format=True)
    return path


def write_dicom_slide(folder: str | Path, image: np.ndarray, mpp: float = 0.25, levels: int = 2,
                      tile: int = 256, stem: str = "level") -> list[Path]:
    """A DICOM slide of ``image`` with ``levels`` levels (each half the last, by 2x2 means), one
    file per level ``<folder>/<stem>_<k>.dcm`` in one new series; returns the file paths."""
    from pydicom.uid import generate_uid

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    series_uid, study_uid = generate_uid(), generate_uid()
    paths = []
    level = np.asarray(image, dtype=np.uint8)
    for k in range(levels):
        paths.append(write_dicom_level(folder / f"{stem}_{k}.dcm", level, series_uid, study_uid, mpp * 2**k, tile))
        h, w = level.shape[0] // 2 * 2, level.shape[1] // 2 * 2
        level = level[:h, :w].reshape(h // 2, 2, w // 2, 2, 3).mean(axis=(1, 3)).round().astype(np.uint8)
    return paths
