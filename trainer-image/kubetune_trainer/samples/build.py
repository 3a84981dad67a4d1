"""Regenerate the sample refrigeration-repair dataset (deterministic).

`python -m kubetune_trainer.samples.build` rewrites the files beside this module. The content
is written for kubetune: common household and commercial refrigeration faults, their likely
causes and the checks a technician makes, in French.
"""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

SYSTEM_PROMPT = (
    "Tu es un technicien frigoriste expérimenté. Tu aides à diagnostiquer et réparer "
    "les réfrigérateurs et congélateurs, en rappelant les règles de sécurité."
)

# (name, feminine)
APPLIANCES = [
    ("réfrigérateur combiné", False),
    ("réfrigérateur américain", False),
    ("congélateur coffre", False),
    ("congélateur armoire", False),
    ("réfrigérateur top", False),
    ("cave à vin", True),
    ("mini-bar d'hôtel", False),
    ("vitrine réfrigérée", True),
    ("réfrigérateur encastrable", False),
    ("chambre froide positive", True),
]

# (symptôme, cause probable, vérifications et réparation)
FAULTS = [
    (
        "ne refroidit plus du tout alors que la lumière s'allume",
        "le compresseur ne démarre pas, souvent à cause du relais de démarrage ou du klixon",
        "Débranchez l'appareil, retirez le relais de démarrage à l'arrière du compresseur et "
        "secouez-le : un bruit de cliquetis indique qu'il est grillé. Mesurez ensuite la "
        "résistance des enroulements du compresseur. Remplacez le relais et le klixon ensemble.",
    ),
    (
        "fait du givre sur la paroi du fond",
        "la résistance de dégivrage ou la sonde de dégivrage est défaillante",
        "Vérifiez la continuité de la résistance de dégivrage avec un multimètre, puis la "
        "sonde de dégivrage. Dégivrez complètement l'appareil avant le test et remplacez la "
        "pièce en défaut par une pièce d'origine.",
    ),
    (
        "coule de l'eau au fond du bac à légumes",
        "le trou d'évacuation de l'eau de dégivrage est bouché",
        "Nettoyez le canal d'évacuation situé au fond de la paroi avec de l'eau tiède et un "
        "goupillon souple. Vérifiez aussi que le bac d'évaporation au-dessus du compresseur "
        "est bien en place.",
    ),
    (
        "fait un bruit de claquement toutes les quelques minutes",
        "le compresseur tente de démarrer puis disjoncte sur le klixon",
        "Contrôlez la tension d'alimentation et le relais de démarrage. Si le compresseur "
        "consomme trop au démarrage, le condensateur de démarrage ou le compresseur lui-même "
        "est à remplacer.",
    ),
    (
        "tourne en permanence sans jamais s'arrêter",
        "le condenseur est encrassé ou le joint de porte n'est plus étanche",
        "Dépoussiérez le condenseur à l'arrière ou sous l'appareil avec une brosse et un "
        "aspirateur. Testez le joint de porte avec une feuille de papier : si elle glisse "
        "sans résistance, remplacez le joint.",
    ),
    (
        "a une température trop basse et gèle les aliments",
        "le thermostat est déréglé ou sa sonde est mal positionnée",
        "Vérifiez le réglage du thermostat, puis la position du bulbe ou de la sonde. "
        "Mesurez la température avec un thermomètre placé dans un verre d'eau au centre "
        "de l'appareil pendant quatre heures.",
    ),
    (
        "affiche un code d'erreur et clignote",
        "la carte électronique a détecté une sonde de température hors plage",
        "Relevez le code d'erreur et consultez la notice du fabricant. Mesurez la résistance "
        "de la sonde concernée et comparez-la au tableau du constructeur avant de "
        "remplacer la carte.",
    ),
    (
        "fait un bruit de ventilateur anormal",
        "le ventilateur de l'évaporateur frotte contre du givre ou son moteur est usé",
        "Débranchez l'appareil, dégivrez-le et faites tourner l'hélice à la main. Si elle "
        "force ou si le moteur chauffe, remplacez le moto-ventilateur.",
    ),
    (
        "sent mauvais malgré le nettoyage",
        "le bac d'évaporation ou le canal d'évacuation contient des dépôts",
        "Nettoyez le bac d'évaporation et le canal d'évacuation avec de l'eau et du "
        "bicarbonate de soude. Laissez la porte ouverte une heure appareil débranché.",
    ),
    (
        "refroidit le congélateur mais pas la partie réfrigérateur",
        "le clapet motorisé ou le ventilateur de brassage est bloqué",
        "Vérifiez que l'air froid circule : écoutez le ventilateur et contrôlez que le clapet "
        "s'ouvre. Un givrage de la gaine d'air est fréquent : dégivrez complètement.",
    ),
    (
        "disjoncte le différentiel de la maison",
        "un défaut d'isolement sur la résistance de dégivrage ou le compresseur",
        "Ne rebranchez pas l'appareil. Mesurez l'isolement entre chaque composant et la "
        "terre avec un mégohmmètre. Remplacez la pièce qui présente une fuite à la terre.",
    ),
    (
        "a une porte qui ne ferme plus correctement",
        "les charnières sont déréglées ou l'appareil n'est pas de niveau",
        "Réglez les pieds avant pour incliner légèrement l'appareil vers l'arrière, puis "
        "resserrez ou remplacez les charnières. Vérifiez ensuite l'étanchéité du joint.",
    ),
    (
        "fait de la condensation à l'extérieur sur les côtés",
        "le réchauffeur de cadre ou l'isolation est défaillant dans une pièce humide",
        "Un peu de condensation est normal par temps très humide. Si elle persiste, "
        "vérifiez le réchauffeur de cadre et l'espace de ventilation autour de l'appareil.",
    ),
    (
        "ne s'allume plus du tout",
        "un problème d'alimentation électrique ou de carte de puissance",
        "Vérifiez la prise avec un autre appareil, puis le cordon et le fusible éventuel. "
        "Si l'alimentation arrive à la carte, contrôlez ses sorties avant de la remplacer.",
    ),
    (
        "a un compresseur très chaud et qui s'arrête souvent",
        "le manque de ventilation autour de l'appareil ou un condenseur sale",
        "Laissez au moins cinq centimètres d'espace autour de l'appareil et nettoyez le "
        "condenseur. Vérifiez que le ventilateur du condenseur tourne sur les modèles qui "
        "en ont un.",
    ),
    (
        "perd son gaz et le circuit semble vide",
        "une fuite de fluide frigorigène sur l'évaporateur ou une soudure",
        "La recherche de fuite et la recharge en fluide sont réservées à un technicien "
        "titulaire de l'attestation de capacité. Un détecteur électronique localise la "
        "fuite, puis le circuit est brasé, tiré au vide et rechargé à la pesée.",
    ),
    (
        "produit des glaçons creux ou n'en produit plus",
        "l'électrovanne d'arrivée d'eau ou le filtre est encrassé",
        "Vérifiez la pression d'eau et remplacez le filtre à eau. Contrôlez ensuite la "
        "bobine de l'électrovanne avec un multimètre.",
    ),
    (
        "a de la glace qui bloque le tiroir du congélateur",
        "la porte est restée entrouverte ou le joint laisse entrer l'air humide",
        "Dégivrez complètement l'appareil, séchez les parois puis vérifiez le joint et la "
        "fermeture de la porte. Évitez d'introduire des plats chauds.",
    ),
    (
        "a une lumière intérieure qui ne s'éteint pas",
        "l'interrupteur de porte est bloqué ou cassé",
        "Appuyez sur l'interrupteur de porte : si la lumière ne s'éteint pas, remplacez-le. "
        "Une lampe allumée en permanence réchauffe l'intérieur.",
    ),
    (
        "vibre et fait du bruit au sol",
        "l'appareil n'est pas stable ou un tuyau touche la carrosserie",
        "Réglez les pieds pour stabiliser l'appareil et écartez délicatement les tuyaux qui "
        "touchent la carrosserie. Vérifiez les silentblocs du compresseur.",
    ),
    (
        "garde une température de dix degrés après la mise en service",
        "le temps de mise en froid n'est pas écoulé ou l'appareil est trop chargé",
        "Attendez vingt-quatre heures avant de charger l'appareil. Si la température ne "
        "baisse pas, vérifiez le compresseur et le thermostat.",
    ),
    (
        "fait un sifflement aigu",
        "le moteur du ventilateur ou le passage du fluide dans le capillaire",
        "Un léger glouglou ou sifflement du fluide est normal. Un sifflement continu vient "
        "souvent d'un ventilateur dont les roulements sont usés : remplacez-le.",
    ),
    (
        "a un afficheur qui indique une température fausse",
        "la sonde d'ambiance est défectueuse ou mal connectée",
        "Comparez l'affichage à un thermomètre de référence. Vérifiez le connecteur de la "
        "sonde puis sa résistance à température connue.",
    ),
    (
        "consomme beaucoup plus d'électricité qu'avant",
        "le joint fatigué, le condenseur sale ou un dégivrage qui ne se fait plus",
        "Nettoyez le condenseur, testez le joint et vérifiez que le dégivrage automatique "
        "fonctionne. Un wattmètre permet de mesurer la consommation sur vingt-quatre heures.",
    ),
]

QUESTION_TEMPLATES = [
    "{Mon} {appliance} {symptom}. Que dois-je vérifier ?",
    "Bonjour, {mon} {appliance} {symptom}. Quelle est la panne probable ?",
    "Que faire si {un} {appliance} {symptom} ?",
    "Client : {mon} {appliance} {symptom}. Comment diagnostiquer ?",
    "Pourquoi {mon} {appliance} {symptom} et comment {le} réparer ?",
]

SAFETY = [
    "Pensez à débrancher l'appareil avant toute intervention.",
    "Coupez l'alimentation électrique avant d'ouvrir le capot.",
    "Portez des gants : les ailettes du condenseur sont coupantes.",
    "Attendez que le compresseur refroidisse avant de le toucher.",
    "",
]


GENERAL_CHECKS = [
    "Notez le modèle et le numéro de série inscrits sur la plaque signalétique à "
    "l'intérieur de la cuve.",
    "Mesurez la température réelle avec un thermomètre placé dans un verre d'eau au centre "
    "de l'appareil.",
    "Vérifiez que l'appareil est de niveau et qu'il dispose d'un espace de ventilation suffisant.",
    "Contrôlez l'état du joint de porte sur tout son pourtour.",
    "Écoutez le compresseur : il doit démarrer puis tourner de façon régulière.",
    "Touchez le condenseur après quelques minutes de fonctionnement : il doit être tiède.",
    "Consultez l'historique des pannes et la date de la dernière intervention.",
    "Vérifiez la tension secteur à la prise avec un multimètre.",
    "Inspectez l'arrière de l'appareil à la recherche de traces d'huile, signe d'une fuite.",
    "Testez le fonctionnement après réparation pendant au moins vingt-quatre heures.",
]

CLOSINGS = [
    "Si le problème persiste, faites appel à un frigoriste certifié.",
    "Si l'appareil a plus de quinze ans, comparez le coût de la réparation à celui d'un "
    "appareil neuf de meilleure classe énergétique.",
    "Conservez les aliments dans une glacière pendant l'intervention.",
]

# Answer styles: real support data mixes one-line answers and long procedures.
STYLES = (("court", 35), ("standard", 40), ("detaille", 25))


def _answer(rng: random.Random, cause: str, fix: str) -> str:
    style = rng.choices([s for s, _ in STYLES], weights=[w for _, w in STYLES])[0]
    if style == "court":
        return f"Cause probable : {cause}."
    answer = f"La cause la plus fréquente est {cause}. {fix}"
    safety = rng.choice(SAFETY)
    if style == "standard":
        return f"{answer} {safety}".strip()
    steps = rng.sample(GENERAL_CHECKS, rng.randint(4, 7))
    numbered = " ".join(f"{i}. {step}" for i, step in enumerate(steps, start=1))
    closing = rng.choice(CLOSINGS)
    return (
        f"{answer}\nAvant de remplacer une pièce, procédez par étapes : {numbered}\n"
        f"{safety} {closing}".strip()
    )


def _rows(count: int = 240, seed: int = 7) -> list[tuple[str, str]]:
    rng = random.Random(seed)  # noqa: S311 - reproducible sample data
    combos = [
        (appliance, fault, template)
        for appliance in APPLIANCES
        for fault in FAULTS
        for template in QUESTION_TEMPLATES
    ]
    rng.shuffle(combos)
    rows = []
    for (appliance, feminine), (symptom, cause, fix), template in combos[:count]:
        mon = "ma" if feminine else "mon"
        question = template.format(
            appliance=appliance,
            symptom=symptom,
            mon=mon,
            Mon=mon.capitalize(),
            un="une" if feminine else "un",
            le="la" if feminine else "le",
        )
        rows.append((question, _answer(rng, cause, fix)))
    return rows


def write_samples(target: Path) -> None:
    rows = _rows()
    target.mkdir(parents=True, exist_ok=True)
    with (target / "frigo_training.csv").open("w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["prompt", "completion"])
        for question, answer in rows:
            writer.writerow([f"Question : {question}\nRéponse :", f" {answer}"])
    with (target / "frigo_training.jsonl").open("w", encoding="utf-8") as f:
        for question, answer in rows:
            record = {"prompt": f"Question : {question}\nRéponse :", "completion": f" {answer}"}
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
    with (target / "frigo_text.csv").open("w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["text"])
        for question, answer in rows:
            writer.writerow([f"Question : {question}\nRéponse : {answer}"])
    with (target / "frigo_text.jsonl").open("w", encoding="utf-8") as f:
        for question, answer in rows:
            record = {"text": f"Question : {question}\nRéponse : {answer}"}
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
    chats = [
        [
            {"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": question},
            {"role": "assistant", "content": answer},
        ]
        for question, answer in rows
    ]
    with (target / "frigo_chat.jsonl").open("w", encoding="utf-8") as f:
        for messages in chats:
            f.write(json.dumps({"messages": messages}, ensure_ascii=False) + "\n")
    with (target / "frigo_chat.csv").open("w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["messages"])
        for messages in chats:
            writer.writerow([json.dumps(messages, ensure_ascii=False)])


# Answers a technician must not give: the dispreferred side of the preference pairs.
BAD_ADVICE = [
    "Pas besoin de débrancher : ouvrez le circuit frigorifique et rechargez le gaz vous-même "
    "avec une bombe achetée en ligne.",
    "Ce n'est rien de grave : attendez quelques semaines, le problème disparaîtra tout seul.",
    "Shuntez le thermostat avec un fil pour forcer le compresseur à tourner en permanence.",
    "Percez la paroi du fond avec une perceuse pour laisser s'écouler l'eau, sans débrancher.",
    "Cognez le compresseur avec un marteau pour le débloquer, l'appareil sous tension.",
    "Jetez l'appareil tout de suite, aucune réparation n'est possible.",
]

PREFERENCE_ROWS = 120


def _preference_rows(count: int = PREFERENCE_ROWS, seed: int = 11) -> list[tuple[str, str, str]]:
    """(question, chosen, rejected): the right diagnosis against a wrong cause or bad advice."""
    rng = random.Random(seed)  # noqa: S311 - reproducible sample data
    rows = []
    for question, chosen in _rows()[:count]:
        fault = rng.randrange(len(FAULTS))
        wrong_cause = FAULTS[fault][1]
        if rng.random() < 0.5 and wrong_cause not in chosen:
            rejected = (
                f"Cause probable : {wrong_cause}. Remplacez la pièce sans autre vérification."
            )
        else:
            rejected = rng.choice(BAD_ADVICE)
        rows.append((question, chosen, rejected))
    return rows


def write_preference_samples(target: Path) -> None:
    """`frigo_preference.jsonl` (prompt/chosen/rejected strings) and `frigo_preference_chat.jsonl`
    (the same pairs as chat messages, trl's conversational preference format)."""
    rows = _preference_rows()
    with (target / "frigo_preference.jsonl").open("w", encoding="utf-8") as f:
        for question, chosen, rejected in rows:
            record = {
                "prompt": f"Question : {question}\nRéponse :",
                "chosen": f" {chosen}",
                "rejected": f" {rejected}",
            }
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
    with (target / "frigo_preference_chat.jsonl").open("w", encoding="utf-8") as f:
        for question, chosen, rejected in rows:
            chat: dict[str, list[dict[str, str]]] = {
                "prompt": [
                    {"role": "system", "content": SYSTEM_PROMPT},
                    {"role": "user", "content": question},
                ],
                "chosen": [{"role": "assistant", "content": chosen}],
                "rejected": [{"role": "assistant", "content": rejected}],
            }
            f.write(json.dumps(chat, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    write_samples(Path(__file__).resolve().parent)
    write_preference_samples(Path(__file__).resolve().parent)
