"""Every paper the library implements or cites, defined once: title, arXiv id and BibTeX.

Method classes point at these through ``_paper`` (model cards, ``hf-unlearn list``); the ``evaluate``
metric modules take their ``citation`` from them. This module imports nothing from ``hf_unlearn``.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Paper:
    title: str
    arxiv_id: str | None
    bibtex: str
    url: str | None = None

    @property
    def link(self) -> str | None:
        return self.url or (f"https://arxiv.org/abs/{self.arxiv_id}" if self.arxiv_id else None)


# ---------------------------------------------------------------------------------------------------
# Methods
# ---------------------------------------------------------------------------------------------------

FLAT_PAPER = Paper(
    title="LLM Unlearning via Loss Adjustment with Only Forget Data",
    arxiv_id="2410.11143",
    bibtex="""@inproceedings{wang2025flat,
  title     = {{LLM} Unlearning via Loss Adjustment with Only Forget Data},
  author    = {Wang, Yaxuan and Wei, Jiaheng and Liu, Chris Yuhao and Pang, Jinlong and Liu, Quan and
               Shah, Ankit Parag and Bao, Yujia and Liu, Yang and Wei, Wei},
  booktitle = {International Conference on Learning Representations (ICLR)},
  year      = {2025},
  url       = {https://arxiv.org/abs/2410.11143}
}""",
)

# GA, GradDiff and IDK baselines, and the TOFU benchmark (forget quality, model utility)
TOFU_PAPER = Paper(
    title="TOFU: A Task of Fictitious Unlearning for LLMs",
    arxiv_id="2401.06121",
    bibtex="""@article{maini2024tofu,
  title   = {{TOFU}: A Task of Fictitious Unlearning for {LLMs}},
  author  = {Maini, Pratyush and Feng, Zhili and Schwarzschild, Avi and Lipton, Zachary C. and Kolter, J. Zico},
  journal = {arXiv preprint arXiv:2401.06121},
  year    = {2024}
}""",
)

NPO_PAPER = Paper(
    title="Negative Preference Optimization: From Catastrophic Collapse to Effective Unlearning",
    arxiv_id="2404.05868",
    bibtex="""@article{zhang2024npo,
  title   = {Negative Preference Optimization: From Catastrophic Collapse to Effective Unlearning},
  author  = {Zhang, Ruiqi and Lin, Licong and Bai, Yu and Mei, Song},
  journal = {arXiv preprint arXiv:2404.05868},
  year    = {2024}
}""",
)

SIMNPO_PAPER = Paper(
    title="Simplicity Prevails: Rethinking Negative Preference Optimization for LLM Unlearning",
    arxiv_id="2410.07163",
    bibtex="""@article{fan2024simnpo,
  title   = {Simplicity Prevails: Rethinking Negative Preference Optimization for {LLM} Unlearning},
  author  = {Fan, Chongyu and Liu, Jiancheng and Lin, Licong and Jia, Jinghan and Zhang, Ruiqi and Mei, Song and
             Liu, Sijia},
  journal = {arXiv preprint arXiv:2410.07163},
  year    = {2024}
}""",
)

# RMU (Representation Misdirection for Unlearning) is introduced with the WMDP benchmark
RMU_PAPER = Paper(
    title="The WMDP Benchmark: Measuring and Reducing Malicious Use With Unlearning",
    arxiv_id="2403.03218",
    bibtex="""@inproceedings{li2024wmdp,
  title     = {The {WMDP} Benchmark: Measuring and Reducing Malicious Use With Unlearning},
  author    = {Li, Nathaniel and Pan, Alexander and Gopal, Anjali and Yue, Summer and Berrios, Daniel and
               Gatti, Alice and Li, Justin D. and Dombrowski, Ann-Kathrin and Goel, Shashwat and Phan, Long and
               others},
  booktitle = {International Conference on Machine Learning (ICML)},
  year      = {2024}
}""",
)

SSD_PAPER = Paper(
    title="Fast Machine Unlearning Without Retraining Through Selective Synaptic Dampening",
    arxiv_id="2308.07707",
    bibtex="""@inproceedings{foster2024ssd,
  title     = {Fast Machine Unlearning Without Retraining Through Selective Synaptic Dampening},
  author    = {Foster, Jack and Schoepf, Stefan and Brintrup, Alexandra},
  booktitle = {Proceedings of the AAAI Conference on Artificial Intelligence},
  year      = {2024}
}""",
)

SALUN_PAPER = Paper(
    title="SalUn: Empowering Machine Unlearning via Gradient-based Weight Saliency in Both Image "
    "Classification and Generation",
    arxiv_id="2310.12508",
    bibtex="""@inproceedings{fan2024salun,
  title     = {{SalUn}: Empowering Machine Unlearning via Gradient-based Weight Saliency in Both Image Classification and Generation},
  author    = {Fan, Chongyu and Liu, Jiancheng and Zhang, Yihua and Wong, Eric and Wei, Dennis and Liu, Sijia},
  booktitle = {International Conference on Learning Representations},
  year      = {2024}
}""",
)

IAU_PAPER = Paper(
    title="Efficient Machine Unlearning via Influence Approximation",
    arxiv_id="2507.23257",
    bibtex="""@article{liu2025iau,
  title   = {Efficient Machine Unlearning via Influence Approximation},
  author  = {Liu, Jiawei and Wu, Chenwang and Lian, Defu and Chen, Enhong},
  journal = {arXiv preprint arXiv:2507.23257},
  year    = {2025}
}""",
)

GUARD_PAPER = Paper(
    title="GUARD: Generation-time LLM Unlearning via Adaptive Restriction and Detection",
    arxiv_id="2505.13312",
    bibtex="""@article{deng2025guard,
  title   = {{GUARD}: Generation-time {LLM} Unlearning via Adaptive Restriction and Detection},
  author  = {Deng, Zhijie and Liu, Chris Yuhao and Pang, Zirui and He, Xinlei and Feng, Lei and Xuan, Qi and Zhu, Zhaowei and Wei, Jiaheng},
  journal = {arXiv preprint arXiv:2505.13312},
  year    = {2025}
}""",
)

# closed-form cross-attention editing, the edit RealEra builds on (RealEraPipeline's method="uce")
UCE_PAPER = Paper(
    title="Unified Concept Editing in Diffusion Models",
    arxiv_id="2308.14761",
    bibtex="""@inproceedings{gandikota2024uce,
  title     = {Unified Concept Editing in Diffusion Models},
  author    = {Gandikota, Rohit and Orgad, Hadas and Belinkov, Yonatan and Materzy{\\'n}ska, Joanna and Bau, David},
  booktitle = {Proceedings of the IEEE/CVF Winter Conference on Applications of Computer Vision (WACV)},
  year      = {2024}
}""",
)

# continual instruction tuning against superficial and essential forgetting (RegLoRA, ASD)
SEFE_PAPER = Paper(
    title="SEFE: Superficial and Essential Forgetting Eliminator for Multimodal Continual Instruction Tuning",
    arxiv_id="2505.02486",
    bibtex="""@inproceedings{chen2025sefe,
  title     = {{SEFE}: Superficial and Essential Forgetting Eliminator for Multimodal Continual Instruction Tuning},
  author    = {Chen, Jinpeng and Cong, Runmin and Zhao, Yuzhi and Yang, Hongzheng and Hu, Guangneng and Ip, Horace H. S. and Kwong, Sam},
  booktitle = {International Conference on Machine Learning},
  year      = {2025}
}""",
)

# multimodal unlearning: the Prompt-Decouple loss and the SARR metric
SAFEERASER_PAPER = Paper(
    title="SafeEraser: Enhancing Safety in Multimodal Large Language Models through Multimodal Machine Unlearning",
    arxiv_id="2502.12520",
    bibtex="""@inproceedings{chen2025safeeraser,
  title     = {{SafeEraser}: Enhancing Safety in Multimodal Large Language Models through Multimodal Machine Unlearning},
  author    = {Chen, Junkai and Deng, Zhijie and Zheng, Kening and Yan, Yibo and Liu, Shuliang and Wu, PeiJun and Jiang, Peijie and Liu, Jia and Hu, Xuming},
  booktitle = {Findings of the Association for Computational Linguistics: ACL 2025},
  year      = {2025}
}""",
)

# fine-tuning the cross-attention with negative guidance (RealEraPipeline's method="esd-x")
ESD_PAPER = Paper(
    title="Erasing Concepts from Diffusion Models",
    arxiv_id="2303.07345",
    bibtex="""@inproceedings{gandikota2023erasing,
  title     = {Erasing Concepts from Diffusion Models},
  author    = {Gandikota, Rohit and Materzy{\\'n}ska, Joanna and Fiotto-Kaufman, Jaden and Bau, David},
  booktitle = {Proceedings of the IEEE/CVF International Conference on Computer Vision (ICCV)},
  year      = {2023}
}""",
)

REALERA_PAPER = Paper(
    title="RealEra: Semantic-level Concept Erasure via Neighbor-Concept Mining",
    arxiv_id="2410.09140",
    bibtex="""@article{liu2024realera,
  title   = {{RealEra}: Semantic-level Concept Erasure via Neighbor-Concept Mining},
  author  = {Liu, Yufan and An, Jinyang and Zhang, Wanqian and Li, Ming and Wu, Dayan and Gu, Jingzi and Lin, Zheng and Wang, Weiping},
  journal = {arXiv preprint arXiv:2410.09140},
  year    = {2024}
}""",
)

# ---------------------------------------------------------------------------------------------------
# Evaluation
# ---------------------------------------------------------------------------------------------------

# the entropy membership-inference attack that SSD evaluates with
BAD_TEACHING_PAPER = Paper(
    title="Can Bad Teaching Induce Forgetting? Unlearning in Deep Networks Using an Incompetent Teacher",
    arxiv_id="2205.08096",
    bibtex="""@inproceedings{chundawat2023can,
  title     = {Can Bad Teaching Induce Forgetting? Unlearning in Deep Networks Using an Incompetent Teacher},
  author    = {Chundawat, Vikram S. and Tarun, Ayush K. and Mandal, Murari and Kankanhalli, Mohan},
  booktitle = {Proceedings of the AAAI Conference on Artificial Intelligence},
  year      = {2023}
}""",
)

MIN_K_PAPER = Paper(
    title="Detecting Pretraining Data from Large Language Models",
    arxiv_id="2310.16789",
    bibtex="""@article{shi2023detecting,
  title   = {Detecting Pretraining Data from Large Language Models},
  author  = {Shi, Weijia and Ajith, Anirudh and Xia, Mengzhou and Huang, Yangsibo and Liu, Daogao and Blevins, Terra and Chen, Danqi and Zettlemoyer, Luke},
  journal = {arXiv preprint arXiv:2310.16789},
  year    = {2023}
}""",
)

WORST_CASE_PAPER = Paper(
    title="Challenging Forgets: Unveiling the Worst-Case Forget Sets in Machine Unlearning",
    arxiv_id="2403.07362",
    bibtex="""@inproceedings{fan2024challenging,
  title     = {Challenging Forgets: Unveiling the Worst-Case Forget Sets in Machine Unlearning},
  author    = {Fan, Chongyu and Liu, Jiancheng and Hero, Alfred and Liu, Sijia},
  booktitle = {European Conference on Computer Vision (ECCV)},
  year      = {2024}
}""",
)

ROUGE_PAPER = Paper(
    title="ROUGE: A Package for Automatic Evaluation of Summaries",
    arxiv_id=None,
    url="https://aclanthology.org/W04-1013/",
    bibtex="""@inproceedings{lin2004rouge,
  title     = {{ROUGE}: A Package for Automatic Evaluation of Summaries},
  author    = {Lin, Chin-Yew},
  booktitle = {Text Summarization Branches Out},
  pages     = {74--81},
  year      = {2004}
}""",
)
