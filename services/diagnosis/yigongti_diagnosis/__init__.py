"""Remote diagnosis (远程诊断): ECG and imaging reading for the county."""
