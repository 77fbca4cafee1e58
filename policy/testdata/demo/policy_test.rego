package strait_test

import data.strait

order := {"name": "Joe", "country": "usa", "account": "6789", "Order_time": "2024-01-01T10:00:00Z", "itemid": "A-1"}

test_full_pii_sees_all if {
	strait.decision == {"default": "clear"} with input as {"principal": {"name": "full-pii"}, "value": order}
}

test_brazil_gets_nothing if {
	strait.decision.drop with input as {"principal": {"name": "brazil"}, "value": order}
}

test_us_financial_keeps_financial if {
	d := strait.decision with input as {"principal": {"name": "us-financial"}, "value": order}
	d.classifications["PII/Financial"] == "clear"
	d["default"] == "redact"
}

test_stranger_dropped if {
	strait.decision.drop with input as {"principal": {"name": "mallory"}, "value": order}
}
