"""The dataset registry: metadata, manifests, replicas."""
