"""Datasets: the embedded synthetic set, DAVIS and YouTube-VOS readers, video files, samplers.

One reader serves real and synthetic data: the synthetic generator writes the DAVIS layout.
"""
from __future__ import annotations

from voslab.data.davis import DAVIS, write_masks
from voslab.data.sequence import Sequence, SequenceList, first_frame_objects
from voslab.data.youtubevos import YouTubeVOS

__all__ = ["DAVIS", "Sequence", "SequenceList", "YouTubeVOS", "first_frame_objects", "write_masks"]
