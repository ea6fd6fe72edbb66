#!/usr/bin/env bash
# Lists 1,000,000 deals (* and UF_*) from the simulator with default limits; see
# client_list.sh. Takes minutes: the portal's bucket drains 2 requests per second.
exec "$(dirname "$0")/client_list.sh" 1000000
