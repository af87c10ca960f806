"""Command lines: ``federation-hub`` (the hub process) and ``fedctl`` (operators).

Top layer of ``federation``: wires the registry, model, translate and xds
layers together; nothing below imports it.
"""
