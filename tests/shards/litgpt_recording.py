"""`litgpt pretrain` as its CLI runs it, with the rows of every training forward pass appended to the JSONL file
$INJC_RECORD: what LitGPT's own loop consumed, in order (evaluation passes, which run without gradients, and the
meta-device pass that counts FLOPs are not training and are not recorded).

    INJC_RECORD=rows.jsonl python litgpt_recording.py pretrain --config CONFIG
"""

import json
import os
import sys

import torch
from litgpt.__main__ import main
from litgpt.model import GPT

forward = GPT.forward


def recording_forward(self, idx, *args, **kwargs):
    if torch.is_grad_enabled() and idx.device.type != "meta":
        with open(os.environ["INJC_RECORD"], "a") as out:
            out.writelines(json.dumps(row) + "\n" for row in idx.tolist())
    return forward(self, idx, *args, **kwargs)


GPT.forward = recording_forward
if __name__ == "__main__":
    sys.argv = ["litgpt", *sys.argv[1:]]
    main()
