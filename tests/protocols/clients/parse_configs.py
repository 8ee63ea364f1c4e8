"""Parse bundle configs with the third-party protos (.venv-clients) and print them as JSON.

Usage: python parse_configs.py tfserving models.config | python parse_configs.py triton config.pbtxt
tfserving: tensorflow_serving.config.model_server_config_pb2.ModelServerConfig (tensorflow-serving-api);
triton: tritonclient.grpc.model_config_pb2.ModelConfig. A parse error fails the script.
"""

import json
import sys

from google.protobuf import json_format, text_format


def main() -> None:
    kind, path = sys.argv[1], sys.argv[2]
    if kind == "tfserving":
        from tensorflow_serving.config.model_server_config_pb2 import ModelServerConfig as Message
    else:
        from tritonclient.grpc.model_config_pb2 import ModelConfig as Message
    with open(path) as handle:
        message = text_format.Parse(handle.read(), Message())
    print(json.dumps(json_format.MessageToDict(message, preserving_proto_field_name=True)))


if __name__ == "__main__":
    main()
