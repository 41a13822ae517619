@400000003879ded713291cfc 4357 > -ERR authorization failed
@400000003914053c22ab2904 status: local 0/10 remote 0/20
