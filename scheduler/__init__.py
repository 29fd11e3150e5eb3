"""scheduler: NVML measurement, packing plans over frozen snapshots, Kubernetes apply."""
