"""The synthetic data source: parking-lot sites laid out (`layout`), drawn (`draw`, `ground`, `cars`,
`render`) and written as a landing batch with exact labels (`dataset`), and looked at (`preview`)."""

from parking_ml.synth.dataset import (
    SiteRenderer,
    SyntheticTile,
    generate_dataset,
    generate_tile,
)
from parking_ml.synth.hard import HARD_MODES, HARD_SET_SEEDS
from parking_ml.synth.preview import read_geojson_mask, render_contact_sheet
from parking_ml.synth.render import ALL_STYLES, HELD_OUT_STYLES, STYLES

__all__ = [
    "ALL_STYLES",
    "HARD_MODES",
    "HARD_SET_SEEDS",
    "HELD_OUT_STYLES",
    "STYLES",
    "SiteRenderer",
    "SyntheticTile",
    "generate_dataset",
    "generate_tile",
    "read_geojson_mask",
    "render_contact_sheet",
]
