"""The operator: kopf handlers over the render step."""
