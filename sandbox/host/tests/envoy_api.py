"""Checks EnvoyFilter patch values against Envoy's v3 API (the envoy-data-plane package's types).

Reads a JSON list of {"name": ..., "type": <full proto message name>, "value": <JSON object>}
from standard input and prints one line per value: "ok NAME" or "error NAME: REASON". Exits 0
when every value is a valid message of its type, 1 otherwise, 2 when the package is missing.

A value is valid when it parses as that message in proto JSON (snake_case or camelCase field
names, "@type" naming the message inside each google.protobuf.Any, which is checked the same
way), names no field the message lacks, encodes to the wire format, and reads back to the same
JSON: a value the parser only accepted by converting it (a string where a bool belongs) differs
after the round trip and is refused.

Envoy's own field rules (protoc-gen-validate: required fields, lengths) are not in these types;
the test checks the ones the install depends on itself.
"""

import importlib
import json
import sys


def message_class(full_name):
    """envoy.extensions.filters.http.wasm.v3.Wasm -> the envoy_data_plane class of that name."""
    package, _, name = full_name.rpartition(".")
    module = importlib.import_module("envoy_data_plane." + package)
    # The Python names are the proto names in PascalCase (RBAC is Rbac).
    found = [
        value
        for key, value in vars(module).items()
        if key.lower() == name.lower() and isinstance(value, type)
    ]
    if len(found) != 1:
        raise AttributeError("no message %s" % full_name)
    return found[0]


def camel(name):
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def normalise(value):
    """Proto JSON with camelCase names, as the round trip writes it; defaults dropped."""
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            item = normalise(item)
            if item in (None, False, 0, "", [], "0s") and key != "@type":
                continue
            out[key if key.startswith("@") else camel(key)] = item
        return out
    if isinstance(value, list):
        return [normalise(item) for item in value]
    return value


def type_urls(value):
    """Every message type a value names: each Any's "@type", and the type_urls of a config
    discovery source."""
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "@type":
                yield item
            elif key in ("type_urls", "typeUrls"):
                yield from item
            else:
                yield from type_urls(item)
    elif isinstance(value, list):
        for item in value:
            yield from type_urls(item)


def check(entry):
    cls = message_class(entry["type"])
    value = entry["value"]
    # Importing a message's module registers it for google.protobuf.Any; a name Envoy does not
    # have fails here.
    for url in type_urls(value):
        prefix, _, name = url.partition("/")
        if prefix != "type.googleapis.com" or not name:
            raise ValueError("%r is not a type.googleapis.com/ type URL" % url)
        try:
            message_class(name)
        except (ImportError, AttributeError):
            raise ValueError("no message %s in Envoy's API" % name) from None
    message = cls.from_dict(value)
    wire = bytes(message)
    again = cls.parse(wire).to_dict()
    want, got = normalise(value), normalise(again)
    if want != got:
        raise ValueError(
            "changes in a round trip through the wire format: "
            + json.dumps(want, sort_keys=True)
            + " became "
            + json.dumps(got, sort_keys=True)
        )


def main():
    try:
        importlib.import_module("envoy_data_plane")
    except ImportError:
        print("the envoy-data-plane Python package is missing (./dev test installs it)")
        return 2
    failed = False
    for entry in json.load(sys.stdin):
        try:
            check(entry)
            print("ok " + entry["name"])
        except Exception as error:  # every reason a value is refused is reported the same way
            failed = True
            print("error %s: %s: %s" % (entry["name"], type(error).__name__, error))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
