//! Reading the tracking tables for the dashboard: the list, the chart, the CSV and one message.
