"""The MobileNetV2TrainJob operator: API models, pure rendering, status, and kopf handlers.

Only the handler modules import kopf, and only `mnv2_operator.k8s` imports the Kubernetes client.
"""
