"""Re-ID where it is used: keyreid embeddings inside BoxMOT's multi-object trackers.

Rooms: mot (MOTChallenge files, vectorised), encoder (KeyreidEncoder, BoxMOT's
AppearanceEncoder), run (one tracker over one sequence), job (the results folder: manifest,
resume, lock), metrics (TrackEval's HOTA / IDF1 / MOTA, cross-camera IDF1). Above inference/;
BoxMOT and TrackEval are imported only when a tracker runs or a metric is computed.
"""

from keyreid.tracking.encoder import KeyreidEncoder
from keyreid.tracking.mot import MotRows, SequenceInfo, find_sequences, read_mot, read_seqinfo, write_mot

__all__ = ["KeyreidEncoder", "MotRows", "SequenceInfo", "find_sequences", "read_mot", "read_seqinfo", "write_mot"]
