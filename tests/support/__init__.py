"""Set-ups shared by the test folders: factories, the survey flow, console and staff helpers."""
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # the repository
