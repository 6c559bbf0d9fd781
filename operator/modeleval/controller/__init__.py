"""The kopf operator: ModelEvaluation -> KubeRay RayCluster -> Ray job -> status and results."""
