"""CIS Kubernetes Benchmark evidence for Talos clusters: the catalogue of controls as data
(data/<benchmark>.yaml, data/talos-defaults.yaml), a static evaluator over the rendered machine
configs (`evaluate`), a triage of kube-bench JSON results (`kubebench`), the lab's emulated
kube-bench run and the real Job (`runtime`), reports and exports (`report`) and their history
(`history`). Nothing is imported here, so `drover.spec` can import `compliance.model` freely.
"""
