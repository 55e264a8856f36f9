"""The trainer: dataset -> degradations -> model -> training -> ONNX export -> evaluation. Needs the [train] extra."""
