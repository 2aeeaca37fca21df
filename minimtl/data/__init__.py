"""Face data for minimtl: GENKI-4K (smile), UTKFace and IMDB-WIKI (gender, age), merged for multi-task training.

The pieces, one module each:

* :mod:`~minimtl.data.base` — data root, the default crop, the crop cache (archives and folders are read by
  :class:`minimtl.archives.FileSource`);
* :mod:`~minimtl.data.genki`, :mod:`~minimtl.data.utkface`, :mod:`~minimtl.data.imdbwiki` — the data sets;
* :mod:`~minimtl.data.age_groups` — the paper's six age groups;
* :mod:`~minimtl.data.multitask` — one set from several, with per-task labels and masks (Equation 1's β);
* :mod:`~minimtl.data.augment` — random crop, flip and rotation (Section 3.1);
* :mod:`~minimtl.data.loader` — shuffled NumPy batches;
* :mod:`~minimtl.data.synthetic` — drawn faces for offline demos and tests;
* :mod:`~minimtl.data.fetch` — ``python -m minimtl.data fetch NAME``.

A typical training set, as in the paper (GENKI-4K for smile, WIKI for gender and age)::

    from minimtl.data import GENKI4K, IMDBWIKI, MultiTaskDataset, DataLoader, Augment
    data = MultiTaskDataset([GENKI4K(), IMDBWIKI()])   # every face through the one framing (default_crop)
    train, test = data.split(seed=0)
    train.print_class_counts()
    for images, labels, masks in DataLoader(train, 128, augment=Augment(seed=0)):
        ...  # images (128, 1, 48, 48) float32; labels/masks {"smile"|"gender"|"age": (128,)}
"""
from .age_groups import AGE_GROUP_NAMES, age_group
from .augment import Augment, random_crop, random_flip, random_rotation
from .base import CLASS_NAMES, IMAGE_SIZE, TASKS, CentreCrop, FaceDataset, FileSource, data_root
from .fetch import DATASETS, fetch
from .genki import GENKI4K
from .imdbwiki import IMDBWIKI
from .loader import Batch, DataLoader, batches, normalize
from .multitask import MultiTaskDataset
from .synthetic import SyntheticFaces
from .utkface import UTKFace

__all__ = [
    "AGE_GROUP_NAMES", "Augment", "Batch", "CLASS_NAMES", "CentreCrop", "DATASETS", "DataLoader", "FaceDataset",
    "FileSource", "GENKI4K", "IMAGE_SIZE", "IMDBWIKI", "MultiTaskDataset", "SyntheticFaces", "TASKS", "UTKFace",
    "age_group", "batches", "data_root", "fetch", "normalize", "random_crop", "random_flip", "random_rotation",
]
