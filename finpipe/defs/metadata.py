"""Metadata every asset attaches the same way: column schemas from the data contracts,
Markdown tables, embedded PNGs and MLflow links."""

import base64

import dagster as dg
import pandas as pd

from finpipe.core.contracts import DATE, FLOAT, INT, STR, Contract

TYPE_NAMES = {DATE: "datetime", STR: "string", INT: "int64", FLOAT: "float64"}


def contract_schema(contract: Contract) -> dict[str, dg.MetadataValue]:
    """`dagster/column_schema` of a table from its data contract (the UI's Columns tab);
    optional columns say so."""
    columns = [
        dg.TableColumn(name, TYPE_NAMES[dtype], description=None)
        for name, dtype in contract.required.items()
    ] + [
        dg.TableColumn(
            name, TYPE_NAMES[dtype], description="optional: absent if the source lacks it"
        )
        for name, dtype in contract.optional.items()
    ]
    return {"dagster/column_schema": dg.MetadataValue.table_schema(dg.TableSchema(columns))}


def frame_schema(frame: pd.DataFrame, descriptions: dict[str, str]) -> dict[str, dg.MetadataValue]:
    """`dagster/column_schema` of a table whose columns are data (the features)."""
    columns = [
        dg.TableColumn(str(name), str(dtype), description=descriptions.get(str(name)))
        for name, dtype in frame.dtypes.items()
    ]
    return {"dagster/column_schema": dg.MetadataValue.table_schema(dg.TableSchema(columns))}


def md_table(frame: pd.DataFrame) -> dg.MetadataValue:
    return dg.MetadataValue.md(frame.to_markdown(index=False, floatfmt=".4f"))


def embedded_png(name: str, png: bytes) -> str:
    """Markdown that shows a PNG inline (asset metadata has no image type)."""
    return f"![{name}](data:image/png;base64,{base64.b64encode(png).decode()})"
