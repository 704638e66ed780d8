"""The lab service's own settings (beside the kit's KitSettings), from the environment."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class LabSettings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore")

    mllp_host: str = Field("127.0.0.1", description="MLLP_HOST: where analysers connect.")
    mllp_port: int | None = Field(
        None, description="MLLP_PORT: HL7 v2 MLLP listener for analysers (none when unset).")
    lis_terminal_id: str | None = Field(
        None, description="LIS_TERMINAL_ID: the bridge's terminal id, registered in "
                          "TERMINALS_FILE under the lab centre's institution.")
    lis_terminal_key_file: str | None = Field(
        None, description="LIS_TERMINAL_KEY_FILE: the bridge's Ed25519 private key (PEM).")
    lab_centre: str = Field("", description="LAB_CENTRE: the centre's institution id (HL7 MSH).")
