package strait

default decision := {"drop": true}

# usa orders: the catalog's defaults (redact, mask, tokenize)
decision := {} if input.value.country == "usa"
