"""File formats: label images with their JSON sidecars (io), COCO JSON (coco), GeoTIFF
georeferencing and GeoJSON polygons (geo)."""
