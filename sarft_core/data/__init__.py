"""Data loading: samples, role profiles, the project's demo data."""
from pathlib import Path

from sarft_core.data.names import match_role, normalise_name
from sarft_core.data.profiles import RoleProfile, get_profile, load_profiles
from sarft_core.data.samples import Sample, load_samples

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DEMO_DIR = PROJECT_ROOT / "data" / "demo"
DEMO_SAMPLES = DEMO_DIR / "samples.jsonl"
DEMO_PROFILES = DEMO_DIR / "profiles.json"
PROBES = PROJECT_ROOT / "data" / "probes.jsonl"
# the embedded-aligned model's training data and its shipped safety adapter (built by `align`)
ALIGN_DIR = PROJECT_ROOT / "data" / "aligned"
ADAPTER_DIR = ALIGN_DIR / "adapter"
# the reproduction grids measured for the docs (config.json + cells/ each): the Compare page shows them read-only
SHIPPED_GRIDS = PROJECT_ROOT / "docs" / "grids"

__all__ = [
    "ADAPTER_DIR", "ALIGN_DIR", "DEMO_PROFILES", "DEMO_SAMPLES", "PROBES", "PROJECT_ROOT", "RoleProfile", "SHIPPED_GRIDS", "Sample",
    "get_profile", "load_profiles", "load_samples", "match_role", "normalise_name",
]
