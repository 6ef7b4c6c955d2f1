"""What a map explains: camserve.targets is camserve.service.targets (Class, Region, Box, Detection, Similarity)."""
from camserve.service.targets import KINDS_OF, Box, Class, Detection, Region, Similarity, Target

__all__ = ["Target", "Class", "Region", "Box", "Detection", "Similarity", "KINDS_OF"]
