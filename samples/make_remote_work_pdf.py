"""Writes samples/handbook/remote-work.pdf, the sample corpus's PDF (run once; the PDF is committed)."""

from pathlib import Path

from llmops.testing import make_pdf

PAGE_1 = """Remote Work Policy

Northwind Labs supports remote and hybrid work. Employees may work remotely up to three days per week, in agreement
with their manager. Some roles, such as lab technicians and office staff, require presence on site and are excluded.

Eligibility. Employees become eligible for remote work after they complete their first month. Fully remote
arrangements, where an employee works from home every day, need approval from the department head and HR.

Workspace. Your remote workspace must be quiet, safe and private enough for confidential calls. Do not work from
public places on restricted data. Always connect through the company VPN when you work outside the office."""

PAGE_2 = """Working abroad. You may work from another country for up to 20 working days per calendar year. Tell HR at
least four weeks before you travel, because tax and immigration rules differ by country. Longer stays abroad need a
written agreement.

Remote work allowance. Employees who work remotely at least two days per week receive a monthly allowance of 40 USD
for internet and electricity costs, paid with payroll.

Availability. During core hours you must be reachable on chat and by phone, and keep your calendar up to date."""

if __name__ == "__main__":
    target = Path(__file__).parent / "handbook" / "remote-work.pdf"
    target.write_bytes(make_pdf([PAGE_1, PAGE_2], title="Remote Work Policy"))
    print(f"wrote {target}")
