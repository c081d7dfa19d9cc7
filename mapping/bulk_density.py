"""Pedotransfer functions (PTFs) for missing bulk density.

Soil-carbon stocks need the bulk density (BD) of the fine earth, and in
permafrost-region pedon compilations it is the property most often missing:
frozen cores are hard to sample by volume. Missing values are estimated from
the organic-carbon content with a published PTF, separately for organic and
mineral horizons, and the estimates are flagged so that later stages can tell
measured from imputed densities.

Available PTFs (``PTFS``; ``"default"`` is ``"hossain2015"``):

``hossain2015``
    Hossain, M. F., Chen, W. & Zhang, Y. (2015). Bulk density of mineral and
    organic soils in the Canada's arctic and sub-arctic. *Information
    Processing in Agriculture* 2, 183-190. doi:10.1016/j.inpa.2015.09.001.
    Exponential fits of BD on SOC (%) for 0-100 cm of northern Canadian soils:

    * mineral (n = 702, R² = 0.99): ``BD = 0.701 + 0.952 exp(-0.29 SOC)``
    * organic (n = 674, R² = 0.93): ``BD = 0.074 + 2.632 exp(-0.076 SOC)``

    A horizon is organic when SOC >= 17 %, the organic-soil-material limit of
    the Canadian System of Soil Classification (Soil Classification Working
    Group 1998), the system of the Canadian survey data the PTF was fitted to.

``hossain2015_combined``
    The same paper's single equation for mineral and organic soils together
    (n = 1376, R² = 0.984): ``BD = 0.071 + 1.322 exp(-0.071 SOC)``.

The PTFs take SOC in percent by mass (g/100 g) and return g cm⁻³. Estimates
are clipped to the range the horizon checks accept (0.05-2.65 g cm⁻³).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from mapping.exceptions import ConfigError

BD_MIN = 0.05
"""Smallest plausible bulk density (g cm⁻³): loose surface moss peat."""
BD_MAX = 2.65
"""Largest plausible bulk density (g cm⁻³): the particle density of quartz."""

Curve = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class BulkDensityPTF:
    """A bulk-density pedotransfer function of SOC content.

    Parameters
    ----------
    name
        Registry name, used in configs and on the command line.
    reference
        Literature reference (author, year, journal, DOI).
    mineral
        BD (g cm⁻³) of mineral horizons as a function of SOC (%).
    organic
        BD of organic horizons, or ``None`` for one equation for all horizons.
    organic_threshold_pct
        SOC (%) from which a horizon counts as organic; ignored without
        ``organic``.
    """

    name: str
    reference: str
    mineral: Curve
    organic: Curve | None = None
    organic_threshold_pct: float = 17.0

    def __call__(self, soc_pct: np.ndarray | pd.Series | float) -> np.ndarray:
        """Bulk density (g cm⁻³) for SOC contents in percent by mass."""
        soc = np.asarray(soc_pct, dtype=float)
        bd = self.mineral(soc)
        if self.organic is not None:
            bd = np.where(soc >= self.organic_threshold_pct, self.organic(soc), bd)
        return np.clip(bd, BD_MIN, BD_MAX)

    def is_organic(self, soc_pct: np.ndarray | pd.Series | float) -> np.ndarray:
        """True where the PTF treats a horizon as organic."""
        soc = np.asarray(soc_pct, dtype=float)
        if self.organic is None:
            return np.zeros(soc.shape, dtype=bool)
        return soc >= self.organic_threshold_pct


_HOSSAIN = (
    "Hossain, Chen & Zhang (2015), Bulk density of mineral and organic soils in the "
    "Canada's arctic and sub-arctic, Inf. Process. Agric. 2:183-190, "
    "doi:10.1016/j.inpa.2015.09.001"
)

PTFS: dict[str, BulkDensityPTF] = {
    "hossain2015": BulkDensityPTF(
        name="hossain2015",
        reference=_HOSSAIN,
        mineral=lambda soc: 0.701 + 0.952 * np.exp(-0.29 * soc),
        organic=lambda soc: 0.074 + 2.632 * np.exp(-0.076 * soc),
        organic_threshold_pct=17.0,
    ),
    "hossain2015_combined": BulkDensityPTF(
        name="hossain2015_combined",
        reference=_HOSSAIN,
        mineral=lambda soc: 0.071 + 1.322 * np.exp(-0.071 * soc),
    ),
}
DEFAULT_PTF = "hossain2015"


def get_ptf(name: str | BulkDensityPTF) -> BulkDensityPTF:
    """Look a PTF up by name (``"default"`` is :data:`DEFAULT_PTF`).

    Raises
    ------
    ConfigError
        The name is not registered; the message lists the known names.
    """
    if isinstance(name, BulkDensityPTF):
        return name
    key = DEFAULT_PTF if name == "default" else name
    try:
        return PTFS[key]
    except KeyError:
        known = ", ".join(["default", *PTFS])
        raise ConfigError(f"unknown bulk-density PTF {name!r}; choose one of: {known}") from None


def impute_bulk_density(
    soc_pct: np.ndarray | pd.Series,
    bulk_density: np.ndarray | pd.Series,
    ptf: str | BulkDensityPTF = "default",
) -> tuple[np.ndarray, np.ndarray]:
    """Fill missing bulk densities from SOC with a PTF.

    Parameters
    ----------
    soc_pct
        SOC content, % by mass, one value per horizon.
    bulk_density
        Measured bulk density (g cm⁻³); NaN where missing.
    ptf
        PTF name or object (see :data:`PTFS`).

    Returns
    -------
    bd, imputed
        Bulk density with the gaps filled, and a boolean mask of filled values.

    Examples
    --------
    >>> bd, flag = impute_bulk_density([2.0, 30.0], [1.2, float("nan")])
    >>> bd.round(3).tolist(), flag.tolist()
    ([1.2, 0.343], [False, True])
    """
    f = get_ptf(ptf)
    bd = np.asarray(bulk_density, dtype=float).copy()
    missing = np.isnan(bd)
    if missing.any():
        bd[missing] = f(np.asarray(soc_pct, dtype=float)[missing])
    return bd, missing
