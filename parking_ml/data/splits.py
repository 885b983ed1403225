"""Site-grouped splits: a frozen holdout chosen by hashing the site id, and K folds balanced by tile count.

Holdout rule: ``u(site) = int(sha256(site)[:15], 16) / 16**15`` is a fixed number in [0, 1) per site; a site is
holdout when ``u(site) < holdout_fraction``. It depends on nothing but the site id, so as data grows a holdout
site stays holdout and never leaks into training. Two guards for tiny datasets only:
  * if every site would be holdout, the site with the highest ``u`` trains instead (at least one train site);
  * with 3 or more sites and none holdout, the site with the lowest ``u`` becomes holdout.
A guarded choice can change when a new site arrives (that is the price of having a holdout at all with 3 sites);
the hash rule itself never changes.

Folds: train sites, largest tile count first (ties by site id), each go to the fold with the fewest tiles so far
(ties: lowest fold index). Deterministic; K = min(folds, number of train sites).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

HOLDOUT_FOLD = -1


def site_unit(site: str) -> float:
    """A stable number in [0, 1) for a site id."""
    return int(hashlib.sha256(site.encode("utf-8")).hexdigest()[:15], 16) / float(16**15)


def holdout_sites(sites: list[str], fraction: float) -> list[str]:
    unique = sorted(set(sites))
    chosen = [s for s in unique if site_unit(s) < fraction]
    if unique and len(chosen) == len(unique):
        chosen.remove(max(chosen, key=site_unit))
    if len(unique) >= 3 and not chosen:
        chosen = [min(unique, key=site_unit)]
    return sorted(chosen)


def assign_folds(tiles_per_site: Mapping[str, int], folds: int) -> dict[str, int]:
    """Site -> fold (0..K-1), balanced by tile count, deterministic."""
    sites = sorted(tiles_per_site, key=lambda s: (-tiles_per_site[s], s))
    k = max(1, min(folds, len(sites)))
    load = [0] * k
    out: dict[str, int] = {}
    for site in sites:
        fold = min(range(k), key=lambda f: (load[f], f))
        out[site] = fold
        load[fold] += tiles_per_site[site]
    return out


def split_sites(tiles_per_site: Mapping[str, int], folds: int, holdout_fraction: float) -> dict[str, int]:
    """Site -> fold, with HOLDOUT_FOLD (-1) for holdout sites."""
    held = set(holdout_sites(list(tiles_per_site), holdout_fraction))
    out = assign_folds({s: n for s, n in tiles_per_site.items() if s not in held}, folds)
    out.update(dict.fromkeys(held, HOLDOUT_FOLD))
    return out
