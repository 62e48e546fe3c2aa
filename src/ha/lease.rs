//! Leader election on a `coordination.k8s.io/v1` Lease: client-go's algorithm, judged on this process's monotonic clock.
