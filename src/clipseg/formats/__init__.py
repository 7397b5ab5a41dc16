"""File formats: label images with their JSON sidecars (io) and COCO JSON (coco)."""
