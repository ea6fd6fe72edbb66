#!/usr/bin/env bash
# Lists 100,000 deals (* and UF_*) from the simulator with default limits; see client_list.sh.
exec "$(dirname "$0")/client_list.sh" 100000
