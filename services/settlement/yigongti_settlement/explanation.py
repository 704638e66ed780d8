"""The patient-facing breakdown in plain Chinese (结算明细说明).

Rendered from a `Breakdown`'s figures and the parameters recorded at each step,
so what the patient reads is what was applied. Pure.
"""

from __future__ import annotations

from decimal import Decimal

from .benefits import AssistanceCategory, CareSetting
from .payers import Breakdown, Rule, SafetyNetGrant, Step

LEVEL_ZH = {1: "一级", 2: "二级", 3: "三级"}
CATEGORY_ZH = {
    AssistanceCategory.low_income: "低保对象",
    AssistanceCategory.extreme_poverty: "特困人员",
    AssistanceCategory.orphan: "孤儿",
    AssistanceCategory.returned_to_poverty: "返贫致贫人口",
    AssistanceCategory.near_poor: "低保边缘家庭成员",
    AssistanceCategory.impoverished_by_illness: "因病致贫重病患者",
}
TIER_ZH = {"critical_illness": "大病保险", "large_amount_subsidy": "职工大额医疗费用补助"}


def yuan(amount: Decimal | str) -> str:
    return f"{Decimal(amount):,.2f}元"


def percent(ratio: Decimal | str) -> str:
    value = (Decimal(ratio) * 100).normalize()
    return f"{value:f}%"


def _wan(amount: Decimal) -> str:
    """50000 → 5万元."""
    return f"{(amount / 10000).normalize():f}万元"


def _bands(text: str) -> str:
    """'50000@0.65;50000@0.70;rest@0.75' → '5万元以内65%，5万元至10万元70%，10万元以上75%'."""
    parts, lower = [], Decimal(0)
    for band in text.split(";"):
        width, ratio = band.split("@")
        if width == "rest":
            parts.append(f"{_wan(lower)}以上{percent(ratio)}" if lower else f"{percent(ratio)}")
            break
        upper = lower + Decimal(width)
        span = f"{_wan(upper)}以内" if not lower else f"{_wan(lower)}至{_wan(upper)}"
        parts.append(f"{span}{percent(ratio)}")
        lower = upper
    return "，".join(parts)


def _items(b: Breakdown) -> list[str]:
    lines = [f"本次结算医疗费用共{yuan(b.total)}。"]
    if b.outside_range:
        parts = [(b.fully_self_paid, "丙类和目录外项目"), (b.over_limit, "超过限价的部分"),
                 (b.first_self_pay, "乙类项目先行自付")]
        detail = "、".join(f"{name}{yuan(amount)}" for amount, name in parts if amount)
        lines.append(f"其中{yuan(b.outside_range)}不在医保政策范围内，由您自付（{detail}）。")
    lines.append(f"政策范围内费用{yuan(b.policy_range)}，依次由以下三重保障支付：")
    return lines


def _basic(b: Breakdown, step: Step) -> str:
    p = step.params
    level = LEVEL_ZH[b.level]
    if step.rule is Rule.basic_inpatient:
        text = f"① 基本医疗保险（{level}医疗机构住院）：每次住院起付线{yuan(p['deductible'])}"
        if Decimal(p["deductible_already_met"]):
            text += f"，本次住院之前的结算已付起付线{yuan(p['deductible_already_met'])}"
    else:
        text = (f"① 基本医疗保险（{level}医疗机构门诊统筹）：年度起付线{yuan(p['deductible'])}"
                f"，今年已付{yuan(p['deductible_already_met'])}")
    text += (f"；本次由您先付起付线{yuan(p['deductible_applied'])}，其余按{percent(p['ratio'])}"
             f"报销，支付{yuan(step.amount)}。")
    if p["capped"] == "True":
        text += f"已达到年度最高支付限额{yuan(p['annual_limit'])}。"
    return text


def _second_tier(b: Breakdown, step: Step) -> str:
    p = step.params
    if step.rule is Rule.second_tier_not_in_setting:
        name = TIER_ZH.get(p["tier"], "第二重保障")
        where = "门诊" if p["setting"] == CareSetting.outpatient else "此类"
        return f"② {name}不支付{where}费用。"
    name = TIER_ZH[step.rule.value]
    if p["tilted"] == "True":
        terms = (f"您是{CATEGORY_ZH[b.assistance_category]}，起付线由{yuan(p['standard_threshold'])}"
                 f"减半为{yuan(p['threshold'])}，各段比例提高5个百分点"
                 + ("，不设封顶线" if p["cap"] == "none" else f"，年度封顶{yuan(p['cap'])}"))
    else:
        terms = f"年度起付线{yuan(p['threshold'])}，年度封顶{yuan(p['cap'])}"
    return (f"② {name}：{terms}。今年经基本医保报销后的政策范围内自付累计{yuan(p['year_base_after'])}，"
            f"超过起付线的部分分段支付（{_bands(p['bands'])}），全年应付{yuan(p['year_owed'])}，"
            f"之前已付{yuan(p['year_paid_before'])}，本次支付{yuan(step.amount)}。")


def _assistance(step: Step) -> str:
    p = step.params
    if step.rule is Rule.assistance_not_eligible:
        return "③ 医疗救助：您不属于医疗救助对象。"
    category = CATEGORY_ZH[AssistanceCategory(p["category"])]
    if step.rule is Rule.assistance_not_in_setting:
        return f"③ 医疗救助（{category}）：不支付此类费用。"
    deductible = f"年度起付线{yuan(p['deductible'])}" if Decimal(p["deductible"]) else "不设起付线"
    text = (f"③ 医疗救助（{category}）：{deductible}，救助比例"
            f"{percent(p['ratio'])}，年度限额{yuan(p['annual_cap'])}。今年前两重保障后的政策范围内"
            f"自付累计{yuan(p['year_base_after'])}，全年应救助{yuan(p['year_owed'])}，之前已救助"
            f"{yuan(p['year_paid_before'])}，本次救助{yuan(step.amount)}。")
    if p["capped"] == "True":
        text += "已达到年度救助限额。"
    return text


def explain(b: Breakdown) -> str:
    """The breakdown as the patient reads it, one sentence a line."""
    _, basic, second, assistance, oop = b.steps  # settle() records them in this order
    lines = _items(b)
    lines.append(_basic(b, basic))
    lines.append(_second_tier(b, second))
    lines.append(_assistance(assistance))
    lines.append(f"三重保障共支付{yuan(b.payers)}，您本次需支付{yuan(b.out_of_pocket)}"
                 f"（政策范围内自付{yuan(oop.params['policy_range_out_of_pocket'])}，"
                 f"政策范围外{yuan(oop.params['outside_range'])}）。")
    return "\n".join(lines)


def explain_safety_net(grant: SafetyNetGrant) -> str:
    """The later grant of 托底救助 on a settlement, as the patient reads it."""
    return (f"经您申请、逐级审核，医保部门给予托底救助{yuan(grant.amount)}。"
            f"这次结算您原需自付{yuan(grant.out_of_pocket_before)}，"
            f"最终自付{yuan(grant.out_of_pocket_after)}。")
