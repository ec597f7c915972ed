"""Face stage: landmark tracking, aligned crops and paste-back, landmark images and masks.

``track_face`` turns frames into a :class:`~pipelines.types.FaceTrack`; ``align_faces`` cuts aligned
crops with it and ``paste_faces`` puts generated crops back; ``rasterize_landmarks`` and
``landmark_coordinates`` make the landmark condition; ``lower_face_mask`` masks the target frame.
"""
from .align import align_faces, crop_landmarks, estimate_transforms, paste_faces
from .detect import FaceDetection, LandmarkDetector, detect_landmarks, load_landmark_detector
from .masks import lower_face_mask, paste_mask
from .raster import landmark_coordinates, rasterize_landmarks
from .track import smooth_landmarks, track_face

__all__ = [
    "track_face", "smooth_landmarks", "detect_landmarks", "load_landmark_detector", "FaceDetection",
    "LandmarkDetector", "align_faces", "paste_faces", "crop_landmarks", "estimate_transforms",
    "rasterize_landmarks", "landmark_coordinates", "lower_face_mask", "paste_mask",
]
