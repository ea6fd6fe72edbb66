//! Bitrix24 portal simulator.
