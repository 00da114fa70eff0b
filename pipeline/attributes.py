"""The 17 attributes of Wang et al. (WACV 2017, Table 2) and the colour each one wears on screen.

Datasets brought by users may have any attribute names; `colours_for` colours those too.
"""

ATTRIBUTES: tuple[str, ...] = (
    "BCC",
    "Beam Off Image",
    "Circ. Beamstop",
    "Diffuse high-q",
    "Diffuse low-q",
    "FCC",
    "Halo",
    "High background",
    "Higher orders",
    "Linear beamstop",
    "Many rings",
    "Polycrystalline",
    "Ring",
    "Strong scattering",
    "Structure factor",
    "Weak scattering",
    "Wedge beamstop",
)

# Distinct hues, alternating light and dark so neighbouring petals stay apart.
PALETTE: tuple[str, ...] = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf",
    "#bcbd22", "#393b79", "#f7b6d2", "#637939", "#e7ba52", "#843c39", "#7b4173", "#3182bd",
    "#31a354", "#fd8d3c", "#9e9ac8", "#636363",
)


def colours_for(names) -> list[str]:
    """One colour per attribute name, cycling the palette beyond its length."""
    return [PALETTE[i % len(PALETTE)] for i in range(len(list(names)))]
