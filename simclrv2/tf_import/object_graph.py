"""Object paths of the variables of a TF2 checkpoint, from its object graph.

A TF2 checkpoint names each variable by one path through the saved object tree (the first
found), e.g. `model/resnet_model/.../kernel/.ATTRIBUTES/VARIABLE_VALUE`. A SavedModel may
reach the same variable first through another attribute (the official export keeps a
`trainable_variables_list`), so the importer asks for every path to each variable: the
`_CHECKPOINTABLE_OBJECT_GRAPH` tensor (a TrackableObjectGraph proto) lists each object's
children and which checkpoint key holds its value.
"""

from collections import deque

from simclrv2.tf_import.protobuf_wire import first, parse_fields

OBJECT_GRAPH_KEY = "_CHECKPOINTABLE_OBJECT_GRAPH"
VALUE_ATTRIBUTE = "VARIABLE_VALUE"
MAX_PATHS_PER_OBJECT = 8


def variable_paths(object_graph: bytes) -> dict[str, list[str]]:
    """Checkpoint key -> every object path (children's local names joined by '/') that leads
    to the variable stored under it, shortest first."""
    nodes = [parse_fields(node) for node in parse_fields(object_graph).get(1, [])]
    children = [
        [
            (first(parse_fields(ref), 1), first(parse_fields(ref), 2, b"").decode())
            for ref in node.get(1, [])
        ]
        for node in nodes
    ]
    value_keys = {}
    for index, node in enumerate(nodes):
        for attribute in node.get(2, []):
            fields = parse_fields(attribute)
            if first(fields, 1, b"").decode() == VALUE_ATTRIBUTE:
                value_keys[index] = first(fields, 3, b"").decode()
    paths: dict[str, list[str]] = {}
    visits = [0] * len(nodes)
    queue = deque([(0, "")])
    while queue:
        index, path = queue.popleft()
        if index >= len(nodes) or visits[index] >= MAX_PATHS_PER_OBJECT:
            continue  # cycles and aliases: the first few (shortest) paths are enough
        visits[index] += 1
        if index in value_keys:
            paths.setdefault(value_keys[index], []).append(path)
        for child, name in children[index]:
            queue.append((child, f"{path}/{name}" if path else name))
    return paths
