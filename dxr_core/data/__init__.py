"""dxr_core.data: paired LQ/HQ folders, deterministic MONAI patch batches, synthetic pairs made by our own code,
real radiograph folders and their patient-level split."""
from dxr_core.data.pairs import (IterationSampler, Pair, PatchDataset, find_pairs, list_images, load_pairs, pair_window,
                                 read_image, split_pairs, write_image)
from dxr_core.data.radiographs import RadiographFolder, list_radiographs, patient_split, read_manifest
from dxr_core.data.synthetic import degrade, make_hq, make_pair, pairs_from_phantom, write_pairs

__all__ = ["IterationSampler", "Pair", "PatchDataset", "find_pairs", "list_images", "load_pairs", "pair_window",
           "read_image", "split_pairs", "write_image", "degrade", "make_hq", "make_pair", "pairs_from_phantom",
           "write_pairs", "RadiographFolder", "list_radiographs", "patient_split", "read_manifest"]
