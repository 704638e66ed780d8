"""Remote ECG and imaging diagnosis (远程心电/影像诊断) contracts."""
